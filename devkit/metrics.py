"""Reading samples out of the Prometheus text the tracker serves."""

from __future__ import annotations


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` whose labels include ``labels``."""
    found = []
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        inner = head[len(name) :].strip("{}")
        pairs = (pair.partition("=") for pair in inner.split(",") if pair)
        sample_labels = {key: raw.strip('"') for key, _, raw in pairs}
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            found.append((sample_labels, float(value)))
    return found


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the matching samples (0 when there are none)."""
    return sum(v for _, v in samples(text, name, **labels))

"""What a reader showed, checked: every expected event exactly once."""

from __future__ import annotations

from collections import Counter


def assert_exactly_once(shown: list[str], expected: set[str]) -> None:
    counts = Counter(shown)
    twice = sorted(key for key, n in counts.items() if n > 1)
    missing = sorted(expected - counts.keys())
    extra = sorted(counts.keys() - expected)
    assert not twice, f"{len(twice)} shown more than once, e.g. {twice[:5]}"
    assert not missing, f"{len(missing)} missing, e.g. {missing[:5]}"
    assert not extra, f"{len(extra)} unexpected, e.g. {extra[:5]}"

"""What the tracker and mqtt-tail share, standard library only: topics, ids, roles,
limits, durations, broker node lists and backoff (docs/architecture.md)."""

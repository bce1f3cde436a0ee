"""mqtt-tail: watch the tracker's events live, each acknowledged event exactly once."""

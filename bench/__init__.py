"""`make bench`: the end-to-end benchmark (see __main__.py and docs/benchmarks.md)."""

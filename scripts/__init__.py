"""The checkout's programs, run as modules from its root: ``python -m scripts.devstack``
(``make run``), ``python -m scripts.cluster`` (``make cluster``) and
``python -m scripts.compose_stack`` (``make test-compose``'s stacks, by hand)."""

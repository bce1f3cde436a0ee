"""The HTTP front: the ASGI fast path, the FastAPI routes, request parsing, batches,
logins and tracing. It hands each event to the service (docs/architecture.md)."""

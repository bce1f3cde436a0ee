"""Operator tooling: `tracker-api accounts`, the password file's broker reload, RabbitMQ
roles and cluster control, shared login options and port checks."""

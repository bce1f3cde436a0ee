"""Operator tooling: the password file's broker reload, RabbitMQ roles and cluster
control, shared login options and port checks."""

"""Tracker API: validates events over HTTP (and MQTT ingest) and publishes them to Mosquitto."""

__version__ = "0.1.0"

"""Background consumers of the broker: device ingest, the archive, the lease that
elects one consumer, and retiring an ingest member."""

"""The database: engine and schema, models, migrations, and the event store."""

"""The database: engine and schema, models, migrations, the event store and the accounts
as operators change them."""

"""Database layer: engine, models, migrations, embedded PostgreSQL."""

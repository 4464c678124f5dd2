"""The fedsilo server: REST API, session engine, database and artifact store."""

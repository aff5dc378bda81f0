"""The store: every query importd runs against PostgreSQL, its migrations and its pool."""

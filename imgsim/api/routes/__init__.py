"""The HTTP API's routes, one module a concern: search, the collection, labels, operations (runs, health, metrics)."""

"""A notes API on FastAPI and aiodbpool: the same service on SQLite or PostgreSQL.

``notes.app:create_app`` builds the application; ``examples/serve`` runs it under uvicorn.
"""

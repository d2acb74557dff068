"""Storage: SQLAlchemy 2 async on SQLite (aiosqlite, WAL) or PostgreSQL (asyncpg).

Only this package builds engines and connections; the rest of the engine calls :class:`Store`.
"""

from engine.storage.store import Conn, Store, build_store

__all__ = ["Conn", "Store", "build_store"]

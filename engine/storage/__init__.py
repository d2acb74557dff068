"""Storage: SQLAlchemy 2 on SQLite (WAL; statements on the event loop's thread, scans and
migrations in worker threads) or PostgreSQL (asyncpg).

Only this package builds engines and connections; the rest of the engine calls :class:`Store`.
"""

from engine.storage.store import Conn, Store, build_store

__all__ = ["Conn", "Store", "build_store"]

"""MEMORY: the Store protocol and its implementations, picked from a URL."""

from podium.state import RunRecord, StepRecord, apply_event
from podium.store.base import Store
from podium.store.factory import DEFAULT_DB_URL, default_db_url, open_store
from podium.store.memory import MemoryStore

__all__ = [
    "DEFAULT_DB_URL",
    "MemoryStore",
    "RunRecord",
    "StepRecord",
    "Store",
    "apply_event",
    "default_db_url",
    "open_store",
]

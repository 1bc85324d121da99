"""MEMORY: the Store protocol and its implementations, picked from a URL."""

from podium.store.base import Store
from podium.store.memory import MemoryStore
from podium.store.records import RunRecord, StepRecord, apply_event

__all__ = ["MemoryStore", "RunRecord", "StepRecord", "Store", "apply_event"]

"""Async orchestration over stores: the only layer that awaits a store (later issues)."""

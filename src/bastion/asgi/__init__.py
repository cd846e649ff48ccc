"""ASGI adapters: translate scope/receive/send and call the engine; no security logic."""

"""WSGI adapters: translate environ/start_response and call the engine; no security logic."""

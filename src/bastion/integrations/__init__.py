"""Framework sugar over the adapters: Starlette/FastAPI dependencies, Flask helpers."""

"""Runnable examples of bastion on Flask, Starlette and FastAPI; README embeds them verbatim."""

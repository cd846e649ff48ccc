"""API keys: ``bst_`` keys with a checksum, stored as HMAC-SHA256, scoped, expiring, rotatable.

This package gathers what an app needs around API keys: the format and checksum, reading the
key from request headers, scopes, records and verdicts (from :mod:`bastion.core.apikeys`), and
the store side, :class:`APIKeyManager` (from :mod:`bastion.engine.apikeys`, where its store
logic is written once as engine flows with an async and a sync driver). A request handler
does::

    from bastion.apikeys import APIKeyManager, api_key_from_headers

    token = api_key_from_headers(
        x_api_key=request.headers.get("x-api-key"),
        authorization=request.headers.get("authorization"),
    )
    result = await manager.verify(token, required_scope="posts:write", client_ip=ip)
    # or, in a WSGI view: result = manager.verify_sync(token, required_scope="posts:write")
    if not result.ok:
        return JSONResponse({"error": result.status}, status_code=result.http_status)
"""

from __future__ import annotations

from bastion.core.apikeys import (
    API_KEY_PREFIX,
    APIKeyRecord,
    APIKeyStatus,
    RateLimitSetting,
    api_key_from_headers,
    generate_api_key,
    is_well_formed,
    scope_allows,
)
from bastion.engine.apikeys import APIKeyManager, APIKeyResult, CreatedAPIKey

__all__ = [
    "API_KEY_PREFIX",
    "APIKeyManager",
    "APIKeyRecord",
    "APIKeyResult",
    "APIKeyStatus",
    "CreatedAPIKey",
    "RateLimitSetting",
    "api_key_from_headers",
    "generate_api_key",
    "is_well_formed",
    "scope_allows",
]

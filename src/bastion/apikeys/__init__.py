"""API keys: ``bst_`` keys with a checksum, stored as HMAC-SHA256, scoped, expiring, rotatable.

This package gathers what an app needs around API keys without touching a store: the format
and checksum, reading the key from request headers, scopes, records and verdicts (all from
:mod:`bastion.core.apikeys`). The store side, :class:`bastion.engine.apikeys.ApiKeyManager`,
lives in the engine layer, because its store logic is written once as engine flows with an
async and a sync driver (and this package ranks beside the engine, not above it). A request
handler does::

    from bastion.apikeys import api_key_from_headers
    from bastion.engine.apikeys import ApiKeyManager

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
    ApiKeyRecord,
    ApiKeyStatus,
    RateLimitSetting,
    api_key_from_headers,
    generate_api_key,
    is_well_formed,
    scope_allows,
)

__all__ = [
    "API_KEY_PREFIX",
    "ApiKeyRecord",
    "ApiKeyStatus",
    "RateLimitSetting",
    "api_key_from_headers",
    "generate_api_key",
    "is_well_formed",
    "scope_allows",
]

"""API keys: ``bst_`` keys with a checksum, stored as HMAC-SHA256, scoped, expiring, rotatable.

The format, scopes and verdicts are in :mod:`bastion.core.apikeys`; :class:`ApiKeyManager`
keeps the records in a store. A request handler does::

    token = api_key_from_headers(
        x_api_key=request.headers.get("x-api-key"),
        authorization=request.headers.get("authorization"),
    )
    result = await manager.verify(token, required_scope="posts:write", client_ip=ip)
    if not result.ok:
        return JSONResponse({"error": result.status}, status_code=result.http_status)
"""

from __future__ import annotations

from bastion.apikeys.manager import ApiKeyManager, ApiKeyResult, CreatedApiKey
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
    "ApiKeyManager",
    "ApiKeyRecord",
    "ApiKeyResult",
    "ApiKeyStatus",
    "CreatedApiKey",
    "RateLimitSetting",
    "api_key_from_headers",
    "generate_api_key",
    "is_well_formed",
    "scope_allows",
]

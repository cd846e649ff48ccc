"""Cross-origin resource sharing: a validated policy and the decisions it makes, sans I/O.

:class:`CORSPolicy` is the configuration: frozen, checked when it is built, so a mistake fails
at start-up with a :class:`~bastion.errors.ConfigurationError` naming the setting.
:class:`CompiledCORS` is what a middleware holds: every header a response can carry is rendered
to bytes once, per configured origin; on the request path only a pattern-matched origin is
copied into a header. The adapters (:mod:`bastion.asgi.cors`, :mod:`bastion.wsgi.cors`) read
four request headers and apply the answer; nothing here sees a scope or an environ.

Origins. A configured origin is exact (``"https://app.example.com"``, ``"http://localhost:3000"``)
or a pattern (``"https://*.example.com"``), or the lone ``"*"``. Exact origins are normalised
as browsers serialise them (lower-case scheme and host, the default port dropped, one trailing
``/`` tolerated); a path, a query, userinfo, a non-ASCII host (write its ``xn--`` form) or a
trailing dot is refused. A pattern's ``*`` stands for one or more whole DNS labels in front of
a suffix of at least two labels, with the pattern's port: ``https://*.example.com`` admits
``https://a.example.com`` and ``https://a.b.example.com``, never ``https://example.com``,
``https://evilexample.com``, ``https://example.com.evil`` or ``https://a.example.com:8443``.
Danger: the suffix is not checked against the public-suffix list; ``https://*.co.uk`` is every
British company.

A request's ``Origin`` is compared as sent, byte for byte, with those serialised forms. A
browser only ever sends the serialised form, so anything else (``HTTPS://EXAMPLE.COM``, a
trailing dot, ``https://a@example.com``, a path, a default port written out, non-ASCII bytes,
more than :data:`MAX_ORIGIN_BYTES`, two ``Origin`` headers, which the adapters join with a
comma) matches nothing and gets no CORS header: it comes from a program, which needs no CORS to
read the response anyway. ``Origin: null`` (sandboxed frames, ``file:`` pages, some redirects)
is admitted only with ``allow_null=True``, which logs a warning: any page can send it.

Answers.

* A **preflight** is an ``OPTIONS`` (compared as :func:`~bastion.core.request.normalize_method`
  compares methods, so ``options`` is one) carrying ``Origin`` and
  ``Access-Control-Request-Method``. It is answered here, never by the app: ``204`` with the
  allow headers when the origin, the method, every requested header and a private-network
  request (``Access-Control-Request-Private-Network: true``) are allowed, else ``403`` with no
  CORS header at all and a ``malicious_cors`` audit event. A 403 rather than passing the
  request to the app: the app has nothing to say to a preflight, an app's own ``OPTIONS``
  handler could answer it with headers that contradict the policy, and the refusal costs no
  application code and no store I/O (the layer sits before rate limiting and sessions). The
  browser fails the preflight either way; the status makes the refusal visible in its console
  and in logs. Both answers carry ``Vary: Origin, Access-Control-Request-Method,
  Access-Control-Request-Headers, Access-Control-Request-Private-Network`` (they depend on
  those headers; ``OPTIONS`` answers are not cached by HTTP caches, so this costs nothing).
* An ``OPTIONS`` without those two headers is a plain request and goes to the app.
* Every other response passes through the app. The layer owns the ``Access-Control-*``
  response headers: any the app set are removed, so a disallowed origin gets none. An allowed
  origin gets ``Access-Control-Allow-Origin`` (its own value echoed; only a configured origin
  or one matching a pattern's strict grammar is ever echoed), ``Access-Control-Allow-Credentials:
  true`` with ``allow_credentials`` and ``Access-Control-Expose-Headers`` when set. Unless the
  policy is the bare ``"*"``, every response (from an allowed origin, a disallowed one, or none)
  carries ``Vary: Origin``, merged into the app's ``Vary`` (never duplicated; left alone when
  it is ``*``), as the Fetch standard asks of responses whose headers depend on ``Origin``.
* With the bare ``"*"`` (never with credentials) the resource is public: every response carries
  the same ``Access-Control-Allow-Origin: *``, whatever the ``Origin``, and so needs no
  ``Vary`` (the Fetch standard's advice for public resources).

Methods are compared as :func:`~bastion.core.request.normalize_method` compares them (ASCII
upper-cased), header names case-insensitively. ``*`` is refused in ``allow_methods``,
``allow_headers`` and ``expose_headers``: browsers read it as "any" only for requests without
credentials and never as ``Authorization``; list the names.
"""

from __future__ import annotations

from bastion.core.cors.compiled import CompiledCORS, Preflight, apply_headers
from bastion.core.cors.policy import (
    MAX_ORIGIN_BYTES,
    MAX_REQUEST_HEADERS_BYTES,
    PREFLIGHT_VARY,
    RATE_LIMIT_HEADERS,
    CORSPolicy,
    CORSReason,
    parse_origin_setting,
)

__all__ = [
    "MAX_ORIGIN_BYTES",
    "MAX_REQUEST_HEADERS_BYTES",
    "PREFLIGHT_VARY",
    "RATE_LIMIT_HEADERS",
    "CORSPolicy",
    "CORSReason",
    "CompiledCORS",
    "Preflight",
    "apply_headers",
    "parse_origin_setting",
]

"""The method and the path of a request, read the same way by every layer.

Every bastion layer that decides by method or path (rate-limit rules, CSRF safe methods and
exemptions, per-route header policies) reads them through these functions, so the layers agree
with each other and never with less than the framework behind them.

Methods. HTTP methods are case-sensitive on the wire, but werkzeug (Flask) and Quart upper-case
them before routing, and WSGI servers and h11-based ASGI servers pass ``post`` through: a rule
for ``POST`` that compared the text as sent let ``post /login`` past it. :func:`normalize_method`
upper-cases ASCII letters only (``str.upper`` turns ``"po\u017ft"``, with a long s, into
``"POST"``); a method
with any other character is kept as sent, matches no method rule and is never a safe method.
:func:`expand_methods` makes a rule for ``GET`` cover ``HEAD`` too: Flask and Starlette answer
``HEAD`` by running the ``GET`` view.

A safe method with a body. ``GET`` and ``HEAD`` carry no content a browser would send, but a
client may send one (``Content-Length`` or ``Transfer-Encoding``), and frameworks read it: a
view written ``if request.method == "GET": show the form, else: handle the form`` runs its
``POST`` branch for ``HEAD`` (Starlette routes ``HEAD`` to every ``GET`` route). So a request
with a body is read as the write it can become (:func:`body_methods`): a rate-limit rule for
``POST`` covers it. CSRF leaves it a safe method: no browser can send it, so it forges nothing
(:mod:`bastion.core.csrf`).

Paths. The one path every layer matches is the **full path the client asked for**, mount prefix
included: ``SCRIPT_NAME + PATH_INFO`` under WSGI (:func:`wsgi_path`, decoded from the WSGI
latin-1 form into UTF-8 text, as werkzeug does), ``scope["path"]`` under ASGI, with
``root_path`` prepended only when a server or framework left it out (:func:`asgi_path`). A rule
for an app mounted at ``/app`` is written ``/app/login``, as the browser's address bar shows.

Servers have already decoded percent-escapes (``/log%69n`` arrives as ``/login``) and frameworks
route on that decoded text; nothing decodes twice, so neither does bastion. A path may still be
read two ways by what sits in front of the app: ``//login``, ``/./login``, ``/x/../login`` are
``/login`` to a proxy or framework that merges slashes and removes dot segments, and something
else to one that does not; ``/login/`` and ``/Login`` are ``/login`` to apps with lenient
routing. So the layers match both ways, in the direction that never weakens a protection:

* a protective rule (a rate limit) applies when the path as sent **or** its normal form
  (:func:`match_forms`: merged slashes, dot segments removed, no trailing slash, lower case)
  matches it;
* an exemption applies only when no reading disagrees: a CSRF-exempt route only to a path
  already in normal form (:func:`is_normal`: no ``//``, ``.`` or ``..`` segment) that matches it
  exactly, case and trailing slash included; a per-route header policy only when the path as
  sent and its normal form both select it (else the default policy).

The request view. Key, identity and cost functions receive a :class:`RequestView` (method, full
path, scheme, query, peer, user, headers), built by each adapter from its scope or environ, so
a function written once works under ASGI, WSGI and Flask alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from bastion.core.client import TrustedProxies

__all__ = [
    "BODY_METHOD",
    "OVERRIDE_HEADERS",
    "HeaderSource",
    "RequestView",
    "asgi_path",
    "body_methods",
    "expand_methods",
    "has_body",
    "is_normal",
    "match_forms",
    "normalize_method",
    "normalize_path",
    "override_methods",
    "wsgi_path",
]

OVERRIDE_HEADERS: Final = ("x-http-method-override", "x-http-method", "x-method-override")
"""Headers with which frameworks' method-override middleware lets a ``POST`` act as another
method (lower case)."""

_MAX_OVERRIDES: Final = 8
_HEX: Final = frozenset("0123456789abcdefABCDEF")

BODY_METHOD: Final = "POST"
"""The method a request with a body is also read as (see the module docstring)."""

_IMPLIED: Final = {"GET": "HEAD"}
"""Methods a framework answers with another method's view: ``HEAD`` runs the ``GET`` view."""


def normalize_method(method: str) -> str:
    """``method`` with its ASCII letters upper-cased; any other text is returned unchanged."""
    if method.isascii():
        return method.upper()
    return method


def has_body(content_length: str | None, transfer_encoding: str | None) -> bool:
    """Whether a request announces a body: a ``Content-Length`` other than zero (one that does
    not parse counts as a body; an empty one, as WSGI servers give for none, does not) or any
    ``Transfer-Encoding``."""
    if transfer_encoding:
        return True
    text = (content_length or "").strip()
    if not text:
        return False
    return not (text.isascii() and text.isdigit() and int(text) == 0)


def body_methods(method: str, *, body: bool) -> tuple[str, ...]:
    """The methods a request is read as: its normalized ``method``, and :data:`BODY_METHOD`
    too when it carries a ``body`` under another method (a view may treat it as a form post)."""
    name = normalize_method(method)
    if body and name != BODY_METHOD:
        return (name, BODY_METHOD)
    return (name,)


def expand_methods(methods: Iterable[str]) -> frozenset[str]:
    """The normalized methods of a rule, with the methods frameworks run the same view for
    (``GET`` brings ``HEAD``)."""
    names = {normalize_method(m) for m in methods}
    names.update(_IMPLIED[m] for m in tuple(names) if m in _IMPLIED)
    return frozenset(names)


def override_methods(header_values: Iterable[str | None], query: str) -> tuple[str, ...]:
    """The methods a request asks to be treated as, besides its own: the values of the
    :data:`OVERRIDE_HEADERS` (``header_values``, ``None`` for absent; a value may list several,
    comma-separated) and of ``_method`` query
    parameters, decoded as frameworks decode them (``_method=%50OST``, ``%5Fmethod=post``),
    normalized. At most 8 are returned: enough to find an unsafe one, bounded for any input.
    """
    found = [
        normalize_method(part.strip())
        for value in header_values
        if value
        for part in value.split(",", _MAX_OVERRIDES)[:_MAX_OVERRIDES]
        if part.strip()
    ][:_MAX_OVERRIDES]
    if query and ("method" in query.lower() or "%" in query):
        for pair in query.split("&"):
            raw_name, _, raw_value = pair.partition("=")
            if _form_decode(raw_name).strip().lower() == "_method":
                value = _form_decode(raw_value).strip()
                if value:
                    found.append(normalize_method(value))
            if len(found) >= _MAX_OVERRIDES:
                break
    return tuple(found[:_MAX_OVERRIDES])


def _form_decode(text: str) -> str:
    """``application/x-www-form-urlencoded`` decoding of one query name or value: ``+`` is a
    space, ``%XX`` a byte, UTF-8 text; a ``%`` without two hex digits stays as it is."""
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    out = bytearray()
    index, size = 0, len(text)
    while index < size:
        char = text[index]
        digits = text[index + 1 : index + 3]
        if char == "%" and len(digits) == 2 and digits[0] in _HEX and digits[1] in _HEX:
            out.append(int(digits, 16))
            index += 3
        else:
            out += char.encode("utf-8", "surrogatepass")
            index += 1
    return out.decode("utf-8", "replace")


def asgi_path(path: str, root_path: str) -> str:
    """The full path of an ASGI request from ``scope["path"]`` and ``scope["root_path"]``.

    The ASGI spec (and uvicorn, and Starlette's ``Mount``) put the mount prefix in ``path``;
    older servers gave only the part below it. ``root_path`` is prepended only when ``path``
    does not already start with it at a segment boundary.
    """
    if not root_path or root_path == "/":
        return path or "/"
    root = root_path.rstrip("/")
    if path == root or path.startswith(root + "/"):
        return path
    return root + (path if path.startswith("/") else "/" + path)


def wsgi_path(script_name: str, path_info: str) -> str:
    """The full path of a WSGI request: ``SCRIPT_NAME + PATH_INFO`` as UTF-8 text.

    PEP 3333 gives both as latin-1 text of the raw bytes; they are decoded as UTF-8 (invalid
    bytes become U+FFFD), so a rule for ``/café`` matches under WSGI as under ASGI.
    """
    raw = (script_name or "") + (path_info or "")
    if not raw:
        return "/"
    if not raw.isascii():
        # A value outside latin-1 was decoded already by whoever built the environ: kept.
        with contextlib.suppress(UnicodeEncodeError):
            raw = raw.encode("latin-1").decode("utf-8", "replace")
    return raw if raw.startswith("/") else "/" + raw


def normalize_path(path: str) -> str:
    """``path`` with repeated slashes merged and ``.`` / ``..`` segments removed (RFC 3986
    section 5.2.4); a trailing slash and the case are kept."""
    segments: list[str] = []
    parts = path.split("/")
    for part in parts[1:] if path.startswith("/") else parts:
        if part in {"", "."}:
            continue
        if part == "..":
            if segments:
                segments.pop()
            continue
        segments.append(part)
    trailing = len(segments) > 0 and parts[-1] in {"", ".", ".."}
    return "/" + "/".join(segments) + ("/" if trailing else "")


def is_normal(path: str) -> bool:
    """Whether ``path`` reads the same to every server: no ``//``, ``.`` or ``..`` segment."""
    if "//" not in path and "/." not in path:
        return path.startswith("/")
    return normalize_path(path) == path


def _folded(path: str) -> str:
    text = path.lower()
    return text.rstrip("/") or "/"


def match_forms(path: str) -> tuple[str, ...]:
    """The readings of ``path`` a protective rule is matched against: as sent and in normal
    form, each lower-cased and without a trailing slash (one entry when they agree)."""
    sent = _folded(path)
    if "//" not in path and "/." not in path:
        return (sent,)
    normal = _folded(normalize_path(path))
    return (sent,) if normal == sent else (sent, normal)


HeaderSource: TypeAlias = "Sequence[tuple[bytes, bytes]] | Mapping[str, str]"
"""How an adapter hands a :class:`RequestView` its headers: ASGI's raw ``(name, value)`` byte
pairs as the server gave them, or a mapping by lower-case name (WSGI's adapter gives a lazy
one over the environ's ``HTTP_*`` variables)."""


class RequestView(NamedTuple):
    """What key, identity and cost functions see of a request, the same under ASGI, WSGI and
    Flask: a function written once over it works under every adapter.

    Each adapter builds one per request from its scope or environ (``request_view`` in
    ``bastion.asgi.ratelimit`` and ``bastion.wsgi.ratelimit``). The fields:

    * ``method``: as sent (:func:`normalize_method` gives the form rules compare);
    * ``path``: the **full** path, mount prefix included (:func:`asgi_path`, :func:`wsgi_path`);
    * ``scheme``, and ``query``: the raw query string (latin-1 text);
    * ``peer``: the connection's address as the server gives it (``None`` when unknown); the
      client's address behind trusted proxies is :meth:`client`;
    * ``principal``: what the framework says of the user (Starlette's ``scope["user"]``, WSGI
      ``REMOTE_USER``); :attr:`user` reads the identity from it;
    * ``raw_headers``: the headers as the adapter has them (:data:`HeaderSource`); read them with
      :meth:`header` (one name, repeated fields joined), :meth:`first_header` (the value the
      app reads) or :attr:`headers` (a mapping);
    * ``source``: the scope or environ itself, for the rare function that needs more.

    A named tuple: immutable, and cheap to build on every request; nothing is decoded until a
    function asks for it.
    """

    method: str
    path: str
    scheme: str = "http"
    query: str = ""
    peer: str | None = None
    principal: object = None
    raw_headers: HeaderSource = ()
    source: Any = None

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case; repeated fields joined with ``", "``), or
        ``None`` when the request has none."""
        raw = self.raw_headers
        if not isinstance(raw, Sequence):
            return raw.get(name.lower())
        wanted = name.lower().encode("latin-1")
        found: str | None = None
        for key, value in raw:
            if key == wanted or (not key.islower() and key.lower() == wanted):
                text = value.decode("latin-1")
                found = text if found is None else f"{found}, {text}"
        return found

    def first_header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or ``None``: the one Starlette's
        ``request.headers[name]`` gives the app. A key that identifies the caller by a header
        must read this one: keyed by every value joined (:meth:`header`), a client that
        authenticates with the first value and adds a second with fresh text each time gets
        a new counter per request. Under WSGI the server has already joined repeated fields
        into one variable, which is also what the app reads."""
        raw = self.raw_headers
        if not isinstance(raw, Sequence):
            return raw.get(name.lower())
        wanted = name.lower().encode("latin-1")
        for key, value in raw:
            if key == wanted or (not key.islower() and key.lower() == wanted):
                return value.decode("latin-1")
        return None

    @property
    def headers(self) -> Mapping[str, str]:
        """The request's headers by lower-case name (repeated fields joined with ``", "``),
        decoded on each access: :meth:`header` reads one name more cheaply."""
        raw = self.raw_headers
        if not isinstance(raw, Sequence):
            return raw
        out: dict[str, str] = {}
        for name, value in raw:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            out[key] = f"{out[key]}, {text}" if key in out else text
        return out

    @property
    def user(self) -> str | None:
        """The authenticated user's identity, or ``None`` for an anonymous request: the
        ``principal`` when it is text, else a Starlette-style user's ``identity`` (or
        ``display_name``) when ``is_authenticated``."""
        user = self.principal
        if user is None or isinstance(user, str):
            return user or None
        if not getattr(user, "is_authenticated", False):
            return None
        ident = getattr(user, "identity", None) or getattr(user, "display_name", None)
        return str(ident) if ident else None

    def client(self, proxies: TrustedProxies | None = None) -> str | None:
        """The client's address as ``proxies`` resolve it from the peer and the forwarding
        header; the peer itself without them."""
        if proxies is None or not proxies.trusts_any:
            return self.peer
        value = self.header(proxies.header)
        found = proxies.client(self.peer, [value] if value else [])
        return None if found is None else str(found)

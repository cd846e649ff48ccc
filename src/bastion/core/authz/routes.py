"""The route table of the authorization middleware, decided on plain values.

A :class:`RouteTable` answers, for a request's method and full path, one of three things
(:class:`RouteOutcome`): refuse it at once (``400 authz_bad_path``, ``400
authz_method_override``, ``403 no_route_rule``), let it through as public, or require a
signed-in user holding every permission of the rules that cover it. The adapters
(``bastion.asgi.authz``, ``bastion.wsgi.authz``) then ask the authorizer.

Paths. The table decides on the path frameworks route on, so a path that servers, proxies and
frameworks could read differently is refused before any rule is looked at (``400
authz_bad_path``, :func:`path_problem`): ``..``, ``.`` and empty segments, a backslash, a
``;`` (``/admin;x=1`` is ``/admin`` to Tomcat-style servers behind a proxy), control
characters, an escape left in the decoded path (``%2e``, ``%2f``, ``%5c``, ``%25``: a second
decoding somewhere would change it), and, in the raw path as the client sent it, an encoded
``/``, ``\\``, ``.``, ``;`` or NUL (``%2F``, ``%5C``, ``%2e``, ``%3B``, ``%00``). What is left
is matched in the direction that never weakens a protection (:mod:`bastion.core.paths`):

* a protective rule (``permission=...``, or neither permission nor ``public``: any signed-in
  user) applies when any reading of the path matches it (:meth:`PathPattern.covers`: case and
  trailing slash folded), so ``/Admin/`` meets the rule for ``/admin``;
* a public rule applies only to the path exactly as written (:meth:`PathPattern.exempts`), and
  lifts a protective rule only when it is more specific and inside it (``public /login`` under
  ``/*``; ``public /static/*`` under ``/*``; never ``public /*`` over ``/admin/*``). The same
  pattern both public and protected for one method is a configuration error.

Every protective rule that covers a request applies: ``/*`` requiring ``app:use`` and
``/admin/*`` requiring ``admin:access`` make ``/admin/users`` need both. A request no rule
covers is refused (``403 no_route_rule``): the table fails closed.

Methods. ``HEAD`` is also read as ``GET`` (frameworks run the ``GET`` view for it), so a rule
for ``GET`` always covers ``HEAD``. A method-override header (``X-HTTP-Method-Override``,
``X-HTTP-Method``, ``X-Method-Override``) or a ``_method`` query parameter is refused (``400
authz_method_override``): a middleware further in could turn the ``POST`` the table allowed
into a ``DELETE``. So is a ``_method`` field (:data:`FORM_METHOD_FIELD`) in a urlencoded or
multipart body, which the adapters read (the first MiB; then they replay the body to the app)
and pass as one more override value: an app's own override middleware may read the form as
well as the query. With ``method_override=True`` the request is instead checked as its own
method and as every method it asks for (of a form, the first ``_method`` field).

Danger: a ``_method`` field beyond the first MiB of a form body is not seen; an app that
honours ``_method`` in large bodies must check the method it ends up with itself.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from bastion.core.authz.permission import Permission
from bastion.core.paths import PathPattern
from bastion.core.refusal import Refusal
from bastion.core.request import (
    expand_methods,
    is_normal,
    match_forms,
    normalize_method,
    override_methods,
)
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "ANY_METHOD",
    "BAD_PATH",
    "FORM_METHOD_FIELD",
    "FORM_SCAN_BYTES",
    "METHOD_OVERRIDE",
    "NO_ROUTE_RULE",
    "UNAUTHENTICATED",
    "RouteKind",
    "RouteOutcome",
    "RouteRule",
    "RouteTable",
    "denied_refusal",
    "path_problem",
]

ANY_METHOD: Final = "*"

BAD_PATH: Final = Refusal("authz_bad_path", "Bad Request: the path is not in normal form.\n")
FORM_METHOD_FIELD: Final = "_method"
"""The form field that asks for another method (as the ``_method`` query parameter does)."""
FORM_SCAN_BYTES: Final = 1024 * 1024
"""How much of a form body the adapters read looking for :data:`FORM_METHOD_FIELD` (CSRF's
default ``max_body_bytes``); the rest streams to the app unread."""
METHOD_OVERRIDE: Final = Refusal(
    "authz_method_override", "Bad Request: method override is not accepted here.\n"
)
NO_ROUTE_RULE: Final = Refusal(
    "no_route_rule", "Forbidden: no authorization rule covers this route.\n"
)
UNAUTHENTICATED: Final = Refusal("unauthenticated", "Unauthorized: please sign in.\n")

_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DECODED_ESCAPE: Final = re.compile(r"%(?:2e|2f|5c|25)", re.IGNORECASE)
_RAW_ESCAPE: Final = re.compile(r"%(?:2f|5c|2e|3b|00)", re.IGNORECASE)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_SETTING: Final = "authz.routes"


def denied_refusal(reason: str) -> Refusal:
    """The ``403`` body for a decision denied with ``reason`` (an ``AuthzReason`` value): the
    reason is the stable ``error`` code; the explanation (which rule, which role) goes to the
    audit log, never to the client."""
    return Refusal(reason, f"Forbidden: {reason.replace('_', ' ')}.\n")


def path_problem(path: str, raw_path: str | None = None) -> str | None:
    """Why ``path`` (the full, server-decoded path) is not in normal form, or ``None`` when it
    is. ``raw_path`` is the path as the client sent it (ASGI ``raw_path``, WSGI
    ``REQUEST_URI``/``RAW_URI``; a query after ``?`` is ignored), checked for encoded
    separators and dots. The module docstring lists what is refused."""
    raw = raw_path.partition("?")[0] if raw_path else ""
    checks = (
        (not path.startswith("/"), "does not start with '/'"),
        (_CONTROL.search(path) is not None, "control character"),
        ("\\" in path, "backslash"),
        (";" in path, "';' parameter"),
        (not is_normal(path), "empty, '.' or '..' segment"),
        ("%" in path and _DECODED_ESCAPE.search(path) is not None, "escape in the decoded path"),
        ("%" in raw and _RAW_ESCAPE.search(raw) is not None, "encoded separator or dot"),
    )
    return next((why for bad, why in checks if bad), None)


def _methods(values: object, path: object) -> frozenset[str] | None:
    if isinstance(values, str) or not isinstance(values, (tuple, list, frozenset, set)):
        raise ConfigurationError(
            f"{_SETTING}: methods of {path!r} must be a tuple of method names such as "
            f"('GET', 'POST') or ('*',), got {values!r}",
            setting=_SETTING,
        )
    if not values:
        raise ConfigurationError(
            f"{_SETTING}: methods of {path!r} is empty; write ('*',) for every method",
            setting=_SETTING,
        )
    names: list[str] = []
    for value in values:
        if not isinstance(value, str) or not _TOKEN.fullmatch(value):
            raise ConfigurationError(
                f"{_SETTING}: {value!r} in the methods of {path!r} is not a method name",
                setting=_SETTING,
            )
        names.append(value)
    if ANY_METHOD in names:
        if len(names) > 1:
            raise ConfigurationError(
                f"{_SETTING}: methods of {path!r} mix '*' with method names; '*' is every method",
                setting=_SETTING,
            )
        return None
    return expand_methods(names)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRule:
    """One row of the route table (see the module docstring).

    ``path`` is a :mod:`bastion.core.paths` pattern (``"/admin/*"``, ``"/login"``);
    ``methods`` the methods it applies to (``("*",)``: every method; ``GET`` brings
    ``HEAD``). ``permission`` is the permission a signed-in user must hold
    (``"posts:write"``); ``None`` with ``public=False`` means any signed-in user.
    ``public=True`` lets anyone through, signed in or not, and takes no permission.
    """

    path: str
    methods: tuple[str, ...] = (ANY_METHOD,)
    permission: str | None = None
    public: bool = False
    pattern: PathPattern = field(init=False, repr=False, compare=False)
    method_set: frozenset[str] | None = field(init=False, repr=False, compare=False)
    """The expanded methods (``None``: every method)."""

    def __post_init__(self) -> None:
        pattern = PathPattern.parse(self.path, setting=_SETTING)
        object.__setattr__(self, "pattern", pattern)
        object.__setattr__(self, "method_set", _methods(self.methods, self.path))
        if not isinstance(self.public, bool):
            raise ConfigurationError(
                f"{_SETTING}: public of {self.path!r} must be True or False, got {self.public!r}",
                setting=_SETTING,
            )
        permission = self.permission
        if permission is not None and (not isinstance(permission, str) or not permission):
            raise ConfigurationError(
                f"{_SETTING}: permission of {self.path!r} must be a permission text such as "
                f"'posts:write' or None, got {permission!r}",
                setting=_SETTING,
            )
        if permission is not None:
            object.__setattr__(
                self, "permission", str(Permission.parse(permission, setting=_SETTING))
            )
        if self.public and permission is not None:
            raise ConfigurationError(
                f"{_SETTING}: {self.path!r} is public and names the permission "
                f"{permission!r}; a public route checks nothing (drop one of the two)",
                setting=_SETTING,
            )

    def applies_to(self, method: str) -> bool:
        """Whether the rule's methods include ``method`` (normalized)."""
        return self.method_set is None or method in self.method_set

    def lifts(self, other: RouteRule) -> bool:
        """Whether this (public) rule is more specific than ``other`` and inside it."""
        mine, theirs = self.pattern, other.pattern
        if theirs.prefix:
            inside = (
                theirs.base == "/"
                or mine.folded == theirs.folded
                or mine.folded.startswith(theirs.under)
            )
        else:
            inside = not mine.prefix and mine.folded == theirs.folded
        return inside and _specificity(mine) > _specificity(theirs)


def _specificity(pattern: PathPattern) -> tuple[int, int]:
    segments = 0 if pattern.base == "/" else pattern.base.count("/")
    return (segments, 0 if pattern.prefix else 1)


class RouteKind(enum.StrEnum):
    REFUSED = "refused"
    """Answer ``status`` with ``refusal``; the app is not called."""
    PUBLIC = "public"
    """Call the app; nobody needs to be signed in."""
    PROTECTED = "protected"
    """A signed-in user must hold every one of ``permissions``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteOutcome:
    """What the table says of one request."""

    kind: RouteKind
    status: int = 0
    refusal: Refusal | None = None
    problem: str | None = None
    """For a refusal: what was wrong (for the log), never sent to the client."""
    permissions: tuple[str, ...] = ()
    rules: tuple[RouteRule, ...] = ()
    """The protective rules that apply (for a refusal of ``no_route_rule``: none)."""


_PUBLIC: Final = RouteOutcome(kind=RouteKind.PUBLIC)


class RouteTable:
    """The compiled route table (see the module docstring). ``method_override`` accepts the
    override headers and checks every method they name."""

    __slots__ = ("_protective", "_public", "method_override", "rules")

    def __init__(self, rules: Iterable[RouteRule], *, method_override: bool = False) -> None:
        found = tuple(rules)
        for rule in found:
            if not isinstance(rule, RouteRule):
                raise ConfigurationError(
                    f"{_SETTING} must hold RouteRule values, got {type(rule).__name__}",
                    setting=_SETTING,
                )
        if not isinstance(method_override, bool):
            raise ConfigurationError(
                f"authz.method_override must be True or False, got {method_override!r}",
                setting="authz.method_override",
            )
        self.rules = found
        self.method_override = method_override
        self._public = tuple(r for r in found if r.public)
        self._protective = tuple(r for r in found if not r.public)
        for public in self._public:
            for rule in self._protective:
                if public.pattern.folded == rule.pattern.folded and (
                    public.pattern.prefix == rule.pattern.prefix and _overlap(public, rule)
                ):
                    raise ConfigurationError(
                        f"{_SETTING}: {public.path!r} is both public and protected for the same "
                        "methods; keep one rule",
                        setting=_SETTING,
                    )

    def decide(
        self,
        method: str,
        path: str,
        *,
        raw_path: str | None = None,
        override_headers: Iterable[str | None] = (),
        query: str = "",
    ) -> RouteOutcome:
        """The outcome for a request: ``method`` as sent, ``path`` the full decoded path,
        ``raw_path`` as sent (when the server gives it), ``override_headers`` the values of
        :data:`~bastion.core.request.OVERRIDE_HEADERS` (``None`` for absent), ``query`` the
        raw query string."""
        problem = path_problem(path, raw_path)
        if problem is not None:
            return RouteOutcome(
                kind=RouteKind.REFUSED, status=400, refusal=BAD_PATH, problem=problem
            )
        name = normalize_method(method)
        readings = {name}
        overrides = override_methods(override_headers, query)
        if overrides:
            if not self.method_override:
                return RouteOutcome(
                    kind=RouteKind.REFUSED,
                    status=400,
                    refusal=METHOD_OVERRIDE,
                    problem=f"asks to be read as {', '.join(overrides)}",
                )
            readings.update(overrides)
        if "HEAD" in readings:
            readings.add("GET")
        forms = match_forms(path)
        applied: dict[int, RouteRule] = {}
        for reading in sorted(readings):
            publics = [r for r in self._public if r.applies_to(reading) and r.pattern.exempts(path)]
            covering = [
                r
                for r in self._protective
                if r.applies_to(reading)
                and r.pattern.covers(forms)
                and not any(p.lifts(r) for p in publics)
            ]
            if not covering and not publics:
                return RouteOutcome(
                    kind=RouteKind.REFUSED,
                    status=403,
                    refusal=NO_ROUTE_RULE,
                    problem=f"no rule for {reading}",
                )
            for rule in covering:
                applied.setdefault(id(rule), rule)
        if not applied:
            return _PUBLIC
        rules = tuple(r for r in self._protective if id(r) in applied)
        permissions = tuple(dict.fromkeys(r.permission for r in rules if r.permission))
        return RouteOutcome(kind=RouteKind.PROTECTED, permissions=permissions, rules=rules)

    def __repr__(self) -> str:
        return f"RouteTable(rules={len(self.rules)}, method_override={self.method_override})"


def _overlap(one: RouteRule, other: RouteRule) -> bool:
    if one.method_set is None or other.method_set is None:
        return True
    return bool(one.method_set & other.method_set)

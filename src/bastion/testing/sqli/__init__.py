"""Send a corpus of SQL-injection payloads to an app's endpoints and check what came back.

::

    from bastion.testing.sqli import Target, probe_sql_injection, sqlalchemy_snapshot

    report = probe_sql_injection(
        client,                                   # Starlette/FastAPI TestClient, httpx, Flask
        [Target(path="/items", query=("owner", "sort"), values={"owner": "alice"}),
         Target(path="/items/{item_id}", values={"item_id": "1"})],
        snapshot=sqlalchemy_snapshot(engine),     # the database, read before and after each
        canaries=("bob-secret",),                 # text no answer may ever contain
        tables=("items",),                        # names the DROP/DELETE payloads aim at
    )
    report.assert_clean()

Each injection point (a query parameter, a form field, a JSON field, a path parameter) gets
every payload in turn, the other parameters keeping their benign ``values``. A benign request is
sent first and must succeed, so that a probe of a wrong path (404 every time) cannot pass.

Findings, each with the target, the place, the payload and the status:

- ``server_error``: a 5xx answer, or the client raised (TestClient re-raises app errors). An
  injected quote that breaks the SQL is the classic symptom.
- ``unexpected_status``: not 2xx or 4xx (a 3xx, unless ``redirects_ok``).
- ``database_changed``: the ``snapshot`` differs from before the request (a table dropped, rows
  deleted or updated by a stacked statement). The new state becomes the reference.
- ``canary_leaked``: an answer contains one of ``canaries`` (rows the endpoint must not show:
  a tautology such as ``' OR '1'='1`` or a ``UNION`` returned them). Write canaries of letters,
  digits and ``-`` only, so that no JSON or HTML encoding of the answer hides them.
- ``error_leaked``: an answer contains a database error message (``syntax error``,
  ``sqlite3.OperationalError``, ``psycopg``...): the app shows its SQL errors.
- ``baseline_failed``: the benign request did not answer 2xx.

What it does not do: timing (blind) injection is not measured (no payload sleeps), and a
finding-free report shows only that these payloads did nothing visible, not that the code is
safe. Parameterised queries are the defence; this is the regression test around them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol
from urllib.parse import quote

from bastion.errors import ConfigurationError
from bastion.testing.sqli.corpus import DATABASE_ERRORS, PAYLOADS, TABLE_PAYLOADS
from bastion.testing.sqli.snapshot import SCHEMA_OBJECTS, sqlalchemy_snapshot, sqlite_snapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "PAYLOADS",
    "SCHEMA_OBJECTS",
    "TABLE_PAYLOADS",
    "Answer",
    "Finding",
    "Sender",
    "SqliReport",
    "Target",
    "probe_sql_injection",
    "sqlalchemy_snapshot",
    "sqlite_snapshot",
]

Problem = Literal[
    "server_error",
    "unexpected_status",
    "database_changed",
    "canary_leaked",
    "error_leaked",
    "baseline_failed",
]

_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: the status and the body as text."""

    status: int
    text: str


class Sender(Protocol):
    """Sends one request and returns its :class:`Answer`: the shape to write for a client
    bastion does not adapt itself (``form`` and ``json`` are ``None`` when not sent)."""

    def __call__(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str],
        form: Mapping[str, str] | None,
        json: Mapping[str, str] | None,
        headers: Mapping[str, str],
    ) -> Answer: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One endpoint and where to inject: ``query``, ``form`` and ``json`` name parameters;
    ``{name}`` placeholders in ``path`` are path parameters. ``values`` holds a benign value for
    every parameter (the ones not under attack keep theirs); ``headers`` are sent with each
    request (a session cookie, an API key)."""

    path: str
    method: str = "GET"
    query: tuple[str, ...] = ()
    form: tuple[str, ...] = ()
    json: tuple[str, ...] = ()
    values: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ConfigurationError("Target.path must start with '/'", setting="path")
        method = self.method.upper() if isinstance(self.method, str) else ""
        if method not in _METHODS:
            raise ConfigurationError(
                f"Target.method must be one of {sorted(_METHODS)}", setting="method"
            )
        object.__setattr__(self, "method", method)
        if self.form and self.json:
            raise ConfigurationError("a Target sends a form or JSON, not both", setting="json")
        if not (self.query or self.form or self.json or self.path_params):
            raise ConfigurationError(
                f"Target {self.path}: nothing to inject into (name query, form or json "
                "parameters, or put {name} in the path)",
                setting="query",
            )
        names = (*self.query, *self.form, *self.json, *self.path_params)
        missing = [name for name in names if name not in self.values]
        if missing:
            raise ConfigurationError(
                f"Target {self.path}: values needs a benign value for {missing}",
                setting="values",
            )
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(_PLACEHOLDER.findall(self.path))

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    def points(self) -> tuple[tuple[str, str], ...]:
        """Every injection point as ``(where, name)``."""
        return (
            *(("path", name) for name in self.path_params),
            *(("query", name) for name in self.query),
            *(("form", name) for name in self.form),
            *(("json", name) for name in self.json),
        )

    def send(self, sender: Sender, point: tuple[str, str] | None, payload: str) -> Answer:
        values = dict(self.values)
        if point is not None:
            values[point[1]] = payload
        path = _PLACEHOLDER.sub(lambda m: quote(values[m.group(1)], safe=""), self.path)
        body = {name: values[name] for name in self.form or self.json}
        return sender(
            self.method,
            path,
            query={name: values[name] for name in self.query},
            form=body if self.form else None,
            json=body if self.json else None,
            headers=self.headers,
        )


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a payload did that it must not: ``problem`` (see the module docstring) at
    ``target`` (``"GET /items"``), ``where`` (``"query:owner"``), with its ``payload``."""

    problem: Problem
    target: str
    where: str
    payload: str
    status: int | None
    detail: str = ""

    def __str__(self) -> str:
        status = "no answer" if self.status is None else f"status {self.status}"
        detail = f": {self.detail}" if self.detail else ""
        return (
            f"{self.problem} at {self.target} {self.where} ({status}) with {self.payload!r}{detail}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SqliReport:
    """The result of a probe: ``requests`` sent and the ``findings`` (empty when clean)."""

    requests: int
    findings: tuple[Finding, ...]
    statuses: Mapping[int, int] = field(default_factory=dict)
    """How many answers had each status (a client that raised is not counted)."""

    @property
    def ok(self) -> bool:
        return not self.findings

    def problems(self) -> set[str]:
        return {finding.problem for finding in self.findings}

    def assert_clean(self) -> None:
        """Raise ``AssertionError`` listing the findings (the first 20) when there are any."""
        if self.findings:
            lines = "\n".join(f"  {finding}" for finding in self.findings[:20])
            more = len(self.findings) - 20
            tail = f"\n  ... and {more} more" if more > 0 else ""
            raise AssertionError(
                f"SQL injection probe: {len(self.findings)} finding(s) in {self.requests} "
                f"requests:\n{lines}{tail}"
            )


def _httpx_sender(client: Any) -> Sender:
    def send(
        method: str,
        path: str,
        *,
        query: Mapping[str, str],
        form: Mapping[str, str] | None,
        json: Mapping[str, str] | None,
        headers: Mapping[str, str],
    ) -> Answer:
        response = client.request(
            method, path, params=dict(query), data=form, json=json, headers=dict(headers)
        )
        return Answer(response.status_code, response.text)

    return send


def _werkzeug_sender(client: Any) -> Sender:
    def send(
        method: str,
        path: str,
        *,
        query: Mapping[str, str],
        form: Mapping[str, str] | None,
        json: Mapping[str, str] | None,
        headers: Mapping[str, str],
    ) -> Answer:
        response = client.open(
            path,
            method=method,
            query_string=dict(query),
            data=form,
            json=json,
            headers=dict(headers),
        )
        return Answer(response.status_code, response.get_data(as_text=True))

    return send


def _sender_for(client: object) -> Sender:
    if hasattr(client, "application") and hasattr(client, "open"):  # werkzeug / Flask
        return _werkzeug_sender(client)
    if hasattr(client, "request"):  # httpx.Client, Starlette's and FastAPI's TestClient
        return _httpx_sender(client)
    if callable(client):
        sender: Sender = client  # a Sender written by the caller
        return sender
    raise TypeError(
        f"probe_sql_injection needs an httpx-style client, a Flask test client or a sender "
        f"callable, not {type(client).__name__}"
    )


def _expand(payloads: Iterable[str], tables: Sequence[str], columns: Sequence[str]) -> list[str]:
    column = columns[0] if columns else "id"
    expanded = list(payloads)
    for table in tables:
        expanded.extend(p.format(table=table, column=column) for p in TABLE_PAYLOADS)
    return expanded


class _Probe:
    """The state of one run: the reference snapshot and the findings so far."""

    def __init__(
        self,
        sender: Sender,
        snapshot: Callable[[], object] | None,
        canaries: Sequence[str],
        *,
        redirects_ok: bool,
    ) -> None:
        self.sender = sender
        self.snapshot = snapshot
        self.canaries = canaries
        self.redirects_ok = redirects_ok
        self.reference = snapshot() if snapshot is not None else None
        self.findings: list[Finding] = []
        self.requests = 0
        self.statuses: dict[int, int] = {}

    def run(self, target: Target, point: tuple[str, str] | None, payload: str) -> None:
        where = "baseline" if point is None else f"{point[0]}:{point[1]}"

        def found(problem: Problem, status: int | None, detail: str = "") -> None:
            self.findings.append(Finding(problem, target.label, where, payload, status, detail))

        self.requests += 1
        try:
            answer: Answer | None = target.send(self.sender, point, payload)
        except Exception as error:  # noqa: BLE001 (a TestClient re-raises the app's exception)
            answer = None
            found("server_error", None, f"the client raised {type(error).__name__}")
        if answer is not None:
            self.statuses[answer.status] = self.statuses.get(answer.status, 0) + 1
            self._judge(answer, point is None, found)
        if self.snapshot is not None:
            now = self.snapshot()
            if now != self.reference:
                found("database_changed", answer.status if answer else None)
                self.reference = now

    def _judge(
        self, answer: Answer, baseline: bool, found: Callable[[Problem, int | None, str], None]
    ) -> None:
        status = answer.status
        if status >= 500:
            found("server_error", status, "")
        elif baseline and not 200 <= status < 300:
            found("baseline_failed", status, "the benign request must answer 2xx")
        elif 300 <= status < 400 and not self.redirects_ok:
            found("unexpected_status", status, "a redirect (pass redirects_ok=True to allow)")
        elif not 200 <= status < 500:
            found("unexpected_status", status, "")
        leaked = [canary for canary in self.canaries if canary in answer.text]
        if leaked:
            found("canary_leaked", status, f"the answer contains {leaked[0]!r}")
        error = DATABASE_ERRORS.search(answer.text)
        if error is not None:
            found("error_leaked", status, f"the answer shows {error.group()!r}")


def probe_sql_injection(
    client: object,
    targets: Sequence[Target],
    *,
    snapshot: Callable[[], object] | None = None,
    canaries: Sequence[str] = (),
    tables: Sequence[str] = (),
    columns: Sequence[str] = (),
    payloads: Iterable[str] = PAYLOADS,
    redirects_ok: bool = False,
) -> SqliReport:
    """Send every payload to every injection point of every target; see the module docstring.

    ``client`` is an httpx-style client (``.request``: Starlette's and FastAPI's ``TestClient``,
    ``httpx.Client(base_url=...)`` for a live server), a Flask/werkzeug test client, or a
    callable with the :class:`Sender` signature. ``snapshot`` returns a comparable picture of
    the database (:func:`sqlalchemy_snapshot`, :func:`sqlite_snapshot`); without it the
    database is not checked.
    """
    if not targets:
        raise ConfigurationError("probe_sql_injection needs at least one Target", setting="targets")
    if any(not isinstance(canary, str) or not canary for canary in canaries):
        raise ConfigurationError("canaries must be non-empty strings", setting="canaries")
    corpus = _expand(payloads, tables, columns)
    probe = _Probe(_sender_for(client), snapshot, canaries, redirects_ok=redirects_ok)
    for target in targets:
        probe.run(target, None, "")
        for point in target.points():
            for payload in corpus:
                probe.run(target, point, payload)
    return SqliReport(
        requests=probe.requests,
        findings=tuple(probe.findings),
        statuses=MappingProxyType(dict(sorted(probe.statuses.items()))),
    )

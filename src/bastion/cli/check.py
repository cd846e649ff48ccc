"""``bastion check URL``: grade a site's security headers and cookies like the MDN Observatory.

The fetch is plain ``http.client``: ``GET`` with a deadline (``--timeout`` bounds each request
as a whole, redirects included, however slowly a server trickles its headers), redirects
followed only on the same host (at most :data:`MAX_REDIRECTS`), the body never read past the
headers. Every response of the redirect chain is kept: the cookies a redirect sets are graded
with the final page's, as the Observatory's cookie jar does. A second request is the CORS
preflight the Observatory sends (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method: GET``), to see how the site answers cross-origin requests; for
an ``https://`` URL a third one asks ``http://`` on port 80, to grade the redirection to HTTPS
(``--no-http-probe`` skips it). The probes are best effort: one that fails (nothing listening,
a reset, a malformed redirect) is graded as the Observatory grades a site without that answer,
it never ends the run. IPv6 literals keep their brackets in every URL built here
(``https://[::1]:8443/``). The grading itself is :mod:`bastion.core.headers.grading`.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urljoin, urlsplit

from bastion.cli._common import CommandError
from bastion.core.headers.grading import GRADES, Observation, Report, grade_at_least, grade_response

if TYPE_CHECKING:
    import argparse

__all__ = [
    "MAX_REDIRECTS",
    "PROBE_ORIGIN",
    "add_parsers",
    "format_report",
    "observe",
    "run_check",
]

MAX_REDIRECTS: Final = 10  # the Observatory's limit
PROBE_ORIGIN: Final = "https://bastion-check.invalid"
_USER_AGENT: Final = "bastion-check"
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check",
        help="grade a URL's security headers and cookies (MDN HTTP Observatory rules)",
        description=(
            "Fetch URL and grade its security headers and cookies with the MDN HTTP "
            "Observatory's rules: score (from 100, with bonuses once at 90 or more), grade, "
            "and a table of findings with the fix for each. Redirects are followed on the "
            "same host only. Not graded: <meta http-equiv> policies, subresource integrity, "
            "the HSTS preload list. Exit 1 when the grade is below --min-grade."
        ),
    )
    check.add_argument("url", metavar="URL", help="an http:// or https:// URL")
    check.add_argument(
        "--min-grade",
        choices=GRADES,
        metavar="GRADE",
        help="exit 1 below this grade (A+, A, A-, B+ ... F), for CI",
    )
    check.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="deadline of each request, redirects included (default 10)",
    )
    check.add_argument(
        "--ca-file",
        metavar="PEM",
        help="trust the CA certificates in this file (e.g. a local test CA)",
    )
    check.add_argument(
        "--no-http-probe",
        action="store_true",
        help="do not request http:// on port 80 to grade the redirection to HTTPS",
    )


@dataclass(frozen=True, slots=True)
class _Fetched:
    url: str
    status: int
    headers: tuple[tuple[str, str], ...]


def _authority(host: str) -> str:
    """``host`` as it is written in a URL: an IPv6 literal inside brackets."""
    return f"[{host}]" if ":" in host else host


def _split(url: str) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CommandError(f"URL {url!r} is malformed", exit_code=2) from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"} or not parts.hostname:
        raise CommandError(
            f"URL {url!r} is not an http:// or https:// URL with a host", exit_code=2
        )
    default = 443 if scheme == "https" else 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname, port or default, path


def _abort(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    """Called when the deadline passes: unblock the read in progress (a socket timeout bounds
    one read, so a server sending a byte at a time would otherwise never time out)."""
    expired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _fetch_one(
    url: str, *, deadline: float, context: ssl.SSLContext, origin: str | None = None
) -> _Fetched:
    scheme, host, port, path = _split(url)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=remaining, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=remaining)
    headers = {"User-Agent": _USER_AGENT, "Accept": "text/html,*/*"}
    method = "GET"
    if origin is not None:  # the CORS probe: a preflight
        method = "OPTIONS"
        headers["Origin"] = origin
        headers["Access-Control-Request-Method"] = "GET"
    expired = threading.Event()
    watchdog = threading.Timer(remaining, _abort, (connection, expired))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        fetched = _Fetched(url, response.status, tuple(response.getheaders()))
    except (OSError, http.client.HTTPException):
        if expired.is_set():
            raise TimeoutError("timed out") from None
        raise
    finally:
        watchdog.cancel()
        connection.close()
    if expired.is_set():
        # Cut off mid-head: http.client may have parsed what came as a complete response.
        raise TimeoutError("timed out")
    return fetched


def _follow(
    url: str, *, timeout: float, context: ssl.SSLContext, origin: str | None = None
) -> tuple[tuple[_Fetched, ...], tuple[str, ...]]:
    """Fetch ``url``, following same-host redirects, all within ``timeout`` seconds: every
    response (the last one is the page) and the route of URLs."""
    deadline = time.monotonic() + timeout
    route = [url]
    host = urlsplit(url).hostname
    fetched = [_fetch_one(url, deadline=deadline, context=context, origin=origin)]
    for _ in range(MAX_REDIRECTS):
        location = {k.lower(): v for k, v in fetched[-1].headers}.get("location")
        if fetched[-1].status not in _REDIRECTS or not location:
            break
        target = urljoin(fetched[-1].url, location)
        route.append(target)
        try:
            parts = urlsplit(target)
            off_host = parts.hostname != host or parts.scheme not in {"http", "https"}
        except ValueError:
            break  # a malformed Location: the route records it, nothing to follow
        if off_host:
            break  # never follow off-host: the route records where it pointed
        fetched.append(_fetch_one(target, deadline=deadline, context=context, origin=origin))
    return tuple(fetched), tuple(route)


_FETCH_ERRORS: Final = (OSError, http.client.HTTPException, CommandError, ValueError)
"""What a fetch can raise: network and TLS errors, a broken HTTP answer, a malformed URL in
a redirect (``_split``'s CommandError), a header ``http.client`` refuses to send."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}); pass --ca-file for a test CA"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


def observe(
    url: str, *, timeout: float, ca_file: str | None = None, http_probe: bool = True
) -> tuple[Observation, str]:
    """Fetch ``url`` (and the probes) into an :class:`Observation`; also the final URL."""
    scheme, host, _port, path = _split(url)
    if not 0 < timeout <= 300:
        raise CommandError("--timeout must be between 0 and 300 seconds", exit_code=2)
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"--ca-file {ca_file!r} cannot be read: {_describe(exc)}") from None
    try:
        responses, route = _follow(url, timeout=timeout, context=context)
    except CommandError as exc:
        raise CommandError(f"cannot fetch {url}: {exc}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise CommandError(f"cannot fetch {url}: {_describe(exc)}") from None
    final = responses[-1]
    final_https = urlsplit(final.url).scheme == "https"
    try:
        cors, _ = _follow(final.url, timeout=timeout, context=context, origin=PROBE_ORIGIN)
        cors_headers = cors[-1].headers
    except _FETCH_ERRORS:
        cors_headers = ()
    http_route: tuple[str, ...] | None = None
    if scheme == "http":
        http_route = route
    elif http_probe:
        probe = f"http://{_authority(host)}{path}"
        try:
            _, http_route = _follow(probe, timeout=timeout, context=context)
        except _FETCH_ERRORS:
            http_route = None  # nothing answers on plain HTTP: nothing to redirect
    observation = Observation(
        status=final.status,
        headers=final.headers,
        https=final_https,
        probe_origin=PROBE_ORIGIN,
        cors_headers=cors_headers,
        http_route=http_route,
        url=final.url,
        chain=tuple((hop.url, hop.headers) for hop in responses[:-1]),
    )
    return observation, final.url


def format_report(report: Report, url: str, status: int) -> str:
    """The score, the grade and a table of the findings with their fixes."""
    lines = [
        f"{url} (HTTP {status})",
        f"score {report.score}, grade {report.grade}",
        "",
    ]
    width = max(len(f.test) for f in report.findings)
    result_width = max(len(f.result) for f in report.findings)
    for finding in report.findings:
        mark = "pass" if finding.passed else "FAIL"
        line = (
            f"{mark}  {finding.modifier:+4d}  {finding.test.ljust(width)}  "
            f"{finding.result.ljust(result_width)}"
        )
        if finding.fix:
            line += f"  fix: {finding.fix}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def run_check(
    url: str, *, min_grade: str | None, timeout: float, ca_file: str | None, http_probe: bool
) -> tuple[int, str]:
    """Grade ``url``: the exit code and the report text."""
    observation, final_url = observe(url, timeout=timeout, ca_file=ca_file, http_probe=http_probe)
    report = grade_response(observation)
    text = format_report(report, final_url, observation.status)
    if min_grade is not None and not grade_at_least(report.grade, min_grade):
        return 1, text + f"\n\ngrade {report.grade} is below --min-grade {min_grade}"
    return 0, text

"""Security response headers: a validated policy compiled once into raw header bytes.

A :class:`HeaderPolicy` is configuration: frozen, keyword-only, checked field by field when it is
built, so a typo (``self`` for ``'self'``, ``max-age=-1``, a CR in a CSP source) fails at
start-up with a :class:`~bastion.errors.ConfigurationError` that names the setting. Its
:meth:`HeaderPolicy.compile` renders every header once into ``(name, value)`` byte pairs; the
per-response work in the adapters (:mod:`bastion.asgi.headers`, :mod:`bastion.wsgi.headers`) is
then a set lookup per response header, a list concatenation and, when the CSP carries a nonce,
one ``bytes.join`` per nonce header.

Three presets (:class:`Preset`): ``strict`` (the default, an HTML app that loads its own assets
only; A+ on the MDN HTTP Observatory rules), ``api`` (JSON endpoints: nothing may render, frame
or be sniffed), ``relaxed`` (an app that still needs inline styles, images from anywhere over
HTTPS and framing by itself). None of the presets has a :class:`Weakness`, so none logs a
warning. What ``relaxed`` gives up, each below the warning line: inline ``style`` attributes
and ``<style>`` blocks run (CSS injection can restyle a page or leak attribute values through
selectors, but not run script); images and fonts load from any HTTPS origin or ``data:`` (an
injected image can beacon out the page URL); pages may be framed by the same origin; no COEP
and COOP ``same-origin-allow-popups`` (no cross-origin isolation); CORP ``same-site``; HSTS one
year without ``includeSubDomains``; a shorter Permissions-Policy.

Opting out (:meth:`HeaderPolicy.weaknesses`): setting a protection off is done with its own
named setting, is logged once per policy at start-up as a warning on the
``bastion.security.headers`` logger, and, for the unsafe ones, refused with ``ENV=production``:

* Refused in production, warned elsewhere: script sources (``script-src``, else
  ``default-src``) with ``'unsafe-inline'`` but no nonce, hash or ``'strict-dynamic'``, or with
  ``*``, ``data:``, ``http:`` or ``https:`` but no ``'strict-dynamic'``; no frame-ancestors and
  ``x_frame_options=None``, or frame-ancestors ``*`` / ``http:`` / ``https:`` (clickjacking);
  ``hsts_max_age=0`` (browsers forget HSTS); ``nosniff=False``;
  ``referrer_policy='unsafe-url'``.
* Warned only: ``csp_policy=None`` (or a report-only CSP alone), a CSP without script-src and
  default-src, script ``'unsafe-eval'``, ``hsts_max_age=None`` (a proxy may send either
  header), ``hsts_max_age`` under six months (a staged rollout), ``referrer_policy=None`` or
  ``'no-referrer-when-downgrade'``.

Not warned about: COOP, COEP, CORP and Permissions-Policy set to ``None`` (isolation and feature
controls the browser default leaves open, tuned per app by the presets; turning them off breaks
no baseline protection), ``x_xss_protection_zero=False`` (the auditor it disables is gone from
current browsers), ``include_subdomains=False``, an empty ``remove``, and the three headers below
(``x_permitted_cross_domain_policies``, ``origin_agent_cluster``, ``x_dns_prefetch_control``).

Decisions worth knowing:

* **Handlers win** (Django's ``setdefault`` rule): a header the handler already set is kept,
  unless its name is in :attr:`HeaderPolicy.force`. A page that needs a looser CSP sets its own,
  or the app uses a per-route override policy in the middleware.
* **HSTS only over HTTPS**: RFC 6797 tells browsers to ignore the header on plain HTTP, and
  sending it there advertises a promise the connection did not keep. ``hsts_over_http=True``
  sends it anyway, for a TLS-terminating proxy that does not tell the app the scheme (prefer
  configuring the proxy headers instead).
* **Nonces**: the pseudo-source :data:`NONCE` (``'nonce'``) in a CSP directive is replaced per
  response by ``'nonce-<32 hex digits>'`` (128 random bits, from :class:`NonceSource`). The same
  nonce goes into the enforcing and the report-only policy and is handed to the app for its
  ``<script nonce=...>`` and ``<style nonce=...>`` tags.
* **X-Frame-Options follows CSP frame-ancestors**: ``'none'`` gives ``DENY``, ``'self'`` gives
  ``SAMEORIGIN``; an allowlist cannot be said in X-Frame-Options, so it is then left out (every
  browser with CSP level 2 obeys frame-ancestors). An explicit value that contradicts the CSP is
  refused.
* **X-XSS-Protection: 0**: the XSS auditors of old browsers were removed because they could be
  abused (to switch off a page's own scripts, and as a cross-site leak); ``0`` turns off any
  that remain, which is OWASP's current advice. CSP is the protection.
* **The guide's and helmet's other headers**, each pre-rendered like the rest (a few dozen
  bytes, no per-response work): ``X-Permitted-Cross-Domain-Policies: none`` in every preset
  (Adobe clients obey no ``crossdomain.xml`` on this host, so an uploaded file cannot grant
  another site read access; an API host needs it as much as a page); ``Origin-Agent-Cluster:
  ?1`` in ``strict`` and ``relaxed`` (the page gets its own agent cluster: ``document.domain``
  cannot merge it with a sibling subdomain; ``api`` leaves it out: JSON makes no document);
  ``X-DNS-Prefetch-Control: off`` in ``strict`` only (the host names of a page's links are not
  resolved before a click, so the DNS resolver does not learn which links a page showed, as in
  a webmail; the cost is the latency of the first lookup on a click, which is why ``relaxed``
  leaves prefetching to the browser, and ``api`` has no links). Setting any of them to
  ``None`` (``False``) is not a :class:`Weakness`.
* **Expect-CT is not sent**: Certificate Transparency is enforced by browsers for every publicly
  trusted certificate without any header; Chrome removed Expect-CT in version 107 and MDN lists
  it as deprecated. Sending it would add bytes and no protection.
* **Fingerprinting headers** (``Server``, ``X-Powered-By``) set by the app are removed. A
  ``Server`` header added by the HTTP server itself after the app (uvicorn, gunicorn) is out of
  reach of any middleware: switch it off there (``uvicorn --no-server-header``).
* **COEP require-corp in strict**: every cross-origin subresource must opt in (CORP or CORS),
  which also unlocks cross-origin isolation. Danger: a page embedding third-party images,
  videos or frames breaks; use ``relaxed`` or ``coep_policy="credentialless"`` (or ``None``).
* **CSP reports** are parsed by :func:`parse_csp_reports` (total: any body gives violations or
  :class:`~bastion.errors.BadData`) and accepted by a bounded :class:`ReportReceiver`.
* Every value that reaches a header is visible ASCII, spaces allowed only inside: no CR, LF,
  NUL or other control character, no non-ASCII, so no configuration can split a response.

The package, one concern per module: :mod:`~bastion.core.headers.vocabulary` (the header-value
enums and the checks on configured text), :mod:`~bastion.core.headers.csp`
(:class:`ContentSecurityPolicy`, :data:`NONCE`), :mod:`~bastion.core.headers.permissions`
(:class:`PermissionsPolicy`), :mod:`~bastion.core.headers.policy` (:class:`HeaderPolicy` and
its presets), :mod:`~bastion.core.headers.weaknesses` (:class:`Weakness`: what a policy turns
off), :mod:`~bastion.core.headers.grading` (a response graded as the MDN HTTP Observatory does),
:mod:`~bastion.core.headers.compiled` (:class:`CompiledHeaders`, :class:`NonceSource`: the
per-response path), :mod:`~bastion.core.headers.reports` (CSP reports and their receiver),
:mod:`~bastion.core.headers.router` (:class:`HeaderRouter`: which policy answers which path) and
:mod:`~bastion.core.headers.swagger` (:func:`swagger_ui_policy`). The names below are
re-exported here, where they have always been imported from.
"""

from __future__ import annotations

from bastion.core.headers.compiled import CompiledHeaders, NonceSource
from bastion.core.headers.csp import NONCE, ContentSecurityPolicy
from bastion.core.headers.permissions import PermissionsPolicy
from bastion.core.headers.policy import HeaderPolicy
from bastion.core.headers.reports import (
    CSP_REPORT_MEDIA_TYPES,
    ClientReportBudgets,
    CSPViolation,
    ReportBudget,
    ReportReceiver,
    parse_csp_reports,
)
from bastion.core.headers.router import HeaderRouter
from bastion.core.headers.swagger import swagger_ui_policy
from bastion.core.headers.vocabulary import (
    CrossDomainPolicies,
    CrossOriginEmbedderPolicy,
    CrossOriginOpenerPolicy,
    CrossOriginResourcePolicy,
    DNSPrefetchControl,
    Preset,
    ReferrerPolicy,
    XFrameOptions,
)
from bastion.core.headers.weaknesses import Weakness

__all__ = [
    "CSP_REPORT_MEDIA_TYPES",
    "NONCE",
    "CSPViolation",
    "ClientReportBudgets",
    "CompiledHeaders",
    "ContentSecurityPolicy",
    "CrossDomainPolicies",
    "CrossOriginEmbedderPolicy",
    "CrossOriginOpenerPolicy",
    "CrossOriginResourcePolicy",
    "DNSPrefetchControl",
    "HeaderPolicy",
    "HeaderRouter",
    "NonceSource",
    "PermissionsPolicy",
    "Preset",
    "ReferrerPolicy",
    "ReportBudget",
    "ReportReceiver",
    "Weakness",
    "XFrameOptions",
    "parse_csp_reports",
    "swagger_ui_policy",
]

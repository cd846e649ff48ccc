"""Query safety helpers. Parameterised queries are the defence against SQL injection; these cover
the two places a bound parameter cannot go (docs/data-protection.md).

- :func:`safe_order_by` (and :class:`OrderColumns`, the same allow-list checked once): a sort
  order from a request, mapped through an allow-list to the app's own identifiers; anything else
  is :class:`UnsafeOrderBy` (a ``BadData``: answer 400). The SQLAlchemy form is
  ``bastion.query.sqlalchemy.safe_order_by``.
- :func:`escape_like` and :func:`like_contains`/:func:`like_prefix`/:func:`like_suffix`: user
  text as a literal ``LIKE`` pattern (``ESCAPE '\\'``).

To test an app for injection, ``bastion.testing.sqli`` sends a payload corpus to its endpoints.
"""

from __future__ import annotations

from bastion.query.like import ESCAPE, escape_like, like_contains, like_prefix, like_suffix
from bastion.query.order import OrderBy, OrderColumns, OrderTerm, UnsafeOrderBy, safe_order_by

__all__ = [
    "ESCAPE",
    "OrderBy",
    "OrderColumns",
    "OrderTerm",
    "UnsafeOrderBy",
    "escape_like",
    "like_contains",
    "like_prefix",
    "like_suffix",
    "safe_order_by",
]

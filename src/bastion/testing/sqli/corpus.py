"""The payloads of :mod:`bastion.testing.sqli` and the database error messages it looks for.

Written for bastion from the well-known families: quote breakouts and tautologies, comments,
UNION probes, numeric and ORDER BY contexts, LIKE wildcards, odd encodings (look-alike quotes,
NUL, URL-encoded quotes), stacked statements aimed at the app's own tables.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["DATABASE_ERRORS", "PAYLOADS", "TABLE_PAYLOADS"]

PAYLOADS: Final = (
    # string contexts: break out of the quotes, tautologies, comments
    "'",
    "''",
    '"',
    "\\'",
    "' OR '1'='1",
    "' OR '1'='1' --",
    "' OR 1=1 --",
    "' OR 1=1 /*",
    '" OR "1"="1',
    "') OR ('1'='1",
    "')) OR (('1'='1",
    "' OR 'a' LIKE '%",
    "admin'--",
    "' AND 1=0 UNION SELECT NULL --",
    "' UNION SELECT NULL, NULL --",
    "' UNION ALL SELECT NULL, NULL, NULL --",
    "' || (SELECT 1) || '",
    "'; SELECT 1; --",
    # numeric contexts
    "1 OR 1=1",
    "1) OR (1=1",
    "0 OR 1=1 --",
    "-1 UNION SELECT NULL --",
    "1 AND 1=0",
    "1e309",
    "0x31",
    "99999999999999999999999999",
    # ORDER BY and identifier contexts
    "name; --",
    "(CASE WHEN 1=1 THEN 1 ELSE 2 END)",
    "1, (SELECT 1)",
    "name DESC, (SELECT NULL)",
    # LIKE wildcards and escapes
    "%",
    "_",
    "%' --",
    "\\",
    # encodings, separators and odd characters
    "%27 OR 1=1 --",
    "\u02bc OR 1=1 --",
    "\uff07 OR 1=1 --",
    "' OR 1=1\x00",
    "\x00",
    "'/**/OR/**/1=1--",
    "' oR '1'='1",
    "'" * 300,
)
"""Payloads that need nothing about the app."""

TABLE_PAYLOADS: Final = (
    "'; DROP TABLE {table}; --",
    "1; DROP TABLE {table}",
    "'); DROP TABLE {table}; --",
    "'; DELETE FROM {table}; --",
    "1; DELETE FROM {table}",
    "x'; UPDATE {table} SET {column} = NULL; --",
    "' UNION SELECT * FROM {table} --",
    "0 UNION SELECT * FROM {table}",
)
"""Payloads aimed at the app's tables, filled in for each of ``tables`` (``{column}`` with the
first of ``columns``, ``id`` by default)."""

DATABASE_ERRORS: Final = re.compile(
    r"syntax error|sqlite3\.|OperationalError|ProgrammingError|IntegrityError|psycopg|"
    r"unrecognized token|unterminated quoted|SQLSTATE|You have an error in your SQL syntax|"
    r"sqlalchemy\.exc|no such column|no such table|ORA-\d{5}",
    re.IGNORECASE,
)

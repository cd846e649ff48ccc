"""Entry point of ``python -m bench`` (and ``make bench``)."""

from __future__ import annotations

from bench.cli import main

raise SystemExit(main())

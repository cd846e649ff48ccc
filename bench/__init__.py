"""bastion's benchmark harness: in-process, interleaved, reported as ratios to a baseline.

Layout:

* :mod:`bench.measure`: timed batches (sync and async), interleaved repeats, median and ratio.
* :mod:`bench.driver`: ``call_asgi``, a hand-built ASGI scope/receive/send, and the floor app.
* :mod:`bench.report`: the markdown table.
* :mod:`bench.group`, :mod:`bench.groups`: the groups (``asgi``, ``stores``), one event loop
  each.
* :mod:`bench.cli`: ``python -m bench [--repeats N] [--iterations N] [--only GROUP] [--out F]
  [--redis-url URL] [--spread]``.

Nothing here is a test: timings are reported, never asserted. ``tests/test_bench_harness.py``
checks that the harness itself computes and prints the right things.
"""

from __future__ import annotations

__all__: list[str] = []

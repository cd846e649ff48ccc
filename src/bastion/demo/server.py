"""The demo's uvicorn server: listening sockets bound first, the banner once it serves.

``bastion demo`` binds its sockets itself before anything is printed, so a port that is out of
range or in use is a one-line error, and ``--port 0`` prints the port the system chose. The
demo's start-up (seeding the accounts, the first store write) runs in the server's event loop
before uvicorn accepts connections; a store that cannot be reached ends the start with its
one-line message, never a traceback. Imports uvicorn: the ``demo`` extra.
"""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING

import uvicorn

from bastion.errors import BastionError

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.demo.app import DemoApp

__all__ = ["DemoServer", "listen"]

_BACKLOG = 2048  # uvicorn's default


def listen(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets for every address of ``host`` (``localhost``: IPv4 and IPv6), on
    ``port`` (0: one free port the system chooses, the same for every address).

    Raises :class:`OSError` (the port is in use, the address cannot be bound).
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address[0]) in seen:
                continue
            seen.add((family, address[0]))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            chosen = sockets[0].getsockname()[1] if len(sockets) > 1 else port
            sock.bind((address[0], chosen, *address[2:]))
            sock.listen(_BACKLOG)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class DemoServer(uvicorn.Server):
    """uvicorn's server, running the demo's own start-up and shutdown around its sockets.

    Run with ``lifespan="off"``: the demo's :meth:`~bastion.demo.app.DemoApp.startup` runs
    here, so its failure is kept in :attr:`failure` (one line) instead of uvicorn's logged
    traceback. ``announce`` is called once uvicorn serves on the sockets.
    """

    def __init__(self, config: uvicorn.Config, demo: DemoApp, announce: Callable[[], None]) -> None:
        super().__init__(config)
        self.demo = demo
        self.announce = announce
        self.failure: str | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await self.demo.startup()
        except BastionError as exc:
            self.failure = str(exc)
            self.should_exit = True
            with contextlib.suppress(Exception):  # the start already failed; say why, once
                await self.demo.shutdown()
            return
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self.announce()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets=sockets)
        finally:
            await self.demo.shutdown()

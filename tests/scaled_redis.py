"""Helpers for the Redis Cluster and Redis Sentinel tests.

The session's set-ups are conftest's ``redis_cluster`` (three primaries, one replica each) and
``redis_sentinel`` (a primary, a replica, three Sentinels). Tests that kill a node start their
own (``fresh_cluster``, ``fresh_sentinel`` here) so the shared ones stay whole.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest
from redis import Redis

from bastion.testing.redis_cluster import RedisClusterServers, RedisSentinelServers
from conftest import require_redis_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from bastion.testing.redis_server import RedisServer


@pytest.fixture
def fresh_cluster() -> Iterator[RedisClusterServers]:
    require_redis_server()
    with RedisClusterServers() as cluster:
        yield cluster


@pytest.fixture
def fresh_sentinel() -> Iterator[RedisSentinelServers]:
    require_redis_server()
    with RedisSentinelServers() as setup:
        yield setup


def scaled_url(request: pytest.FixtureRequest, kind: str) -> str:
    """The URL of the session's ``redis`` server, ``redis-cluster`` or ``redis-sentinel``."""
    if kind == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    if kind == "redis-cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        return cluster.url
    if kind == "redis-sentinel":
        setup: RedisSentinelServers = request.getfixturevalue("redis_sentinel")
        return setup.url
    raise ValueError(kind)


def _glob_escape(raw: bytes) -> bytes:
    out = bytearray()
    for byte in raw:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


def shorten_ttls_on(servers: list[RedisServer], prefix: str, seconds: float) -> None:
    """Move time forward on every primary in ``servers`` by shortening the TTLs of the keys
    under ``prefix`` (PEXPIRE to PTTL - ms, DEL when that would be <= 0)."""
    ms = math.ceil(seconds * 1000)
    pattern = _glob_escape(prefix.encode()) + b"*"
    for server in servers:
        if not server.running:
            continue
        client = Redis(host=server.host, port=server.port)
        try:
            if client.info("replication").get("role") != "master":
                continue
            for key in client.scan_iter(match=pattern, count=1000):
                remaining = client.pttl(key)
                if remaining < 0:
                    continue
                if remaining <= ms:
                    client.delete(key)
                else:
                    client.pexpire(key, remaining - ms)
        finally:
            client.close()

"""Group ``scale``: the Redis store on one server, on a Redis Cluster and behind Sentinel.

Servers, all started here on 127.0.0.1 with AOF ``appendfsync everysec`` (Redis's default, so
disk flushes do not dominate): one ``redis-server``; a Redis Cluster of three primaries with one
replica each (:class:`~bastion.testing.redis_cluster.RedisClusterServers`); a primary, a replica
and three Sentinels (:class:`~bastion.testing.redis_cluster.RedisSentinelServers`).

Rows, each divided by the same operation in the same run:

The cluster has three primaries and no replicas here, and is divided by one server; the Sentinel
primary replicates to a replica, and is divided by one server with a replica (so that the
replication's own cost on this host is not counted as routing).

* ``session read``: ``store.get`` of a 100-byte session record (what the session layer reads
  first on every request);
* ``rate-limit decision``: ``store.hit`` with a sliding window, 10^6 per minute (never refused);
* ``set + WAIT 1`` (Sentinel only, divided by the plain set on the same primary): the cost of
  ``wait_replicas=1``, which acknowledges a write only once the replica has it.

Before timing, the set-up proves each row's round trips: the ``INFO commandstats`` calls summed
over every node grow by exactly one ``GET`` per session read and one ``EVALSHA`` per decision on
each topology (so the cluster rows follow no redirections).
"""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Final

from redis import Redis

from bastion.core.ratelimit import Rate, Strategy
from bastion.stores.redis import RedisStore
from bastion.testing.redis_cluster import RedisClusterServers, RedisSentinelServers
from bastion.testing.redis_server import RedisServer
from bench.group import Group
from bench.measure import async_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from bench.group import Options
    from bench.measure import Case

__all__ = ["GROUP"]

VALUE: Final = bytes(range(100))
TTL: Final = 3600.0
PREFIX: Final = "bastion-bench:"
SESSION: Final = "session:bench-handle"
RATES: Final = [Rate(10**6, 60_000_000)]
CHECKS: Final = 10
_HIT: Final = (Strategy.SLIDING_WINDOW, RATES)


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"scale bench set-up check failed: {what}")


def _calls(servers: Iterable[RedisServer], command: str) -> int:
    total = 0
    for server in servers:
        if not server.running:
            continue
        with Redis(host=server.host, port=server.port) as client:
            row = client.info("commandstats").get(f"cmdstat_{command}")
            total += int(row["calls"]) if row else 0
    return total


def _relax(servers: Iterable[RedisServer]) -> None:
    for server in servers:
        with Redis(host=server.host, port=server.port) as client:
            client.config_set("appendfsync", "everysec")


async def _prove_round_trips(label: str, store: RedisStore, servers: list[RedisServer]) -> None:
    before = _calls(servers, "get")
    for _ in range(CHECKS):
        _expect(await store.get(SESSION) == VALUE, f"{label} session read")
    _expect(_calls(servers, "get") - before == CHECKS, f"{label}: one GET per session read")
    before = _calls(servers, "evalsha")
    for _ in range(CHECKS):
        decision = await store.hit("bench-client", Strategy.SLIDING_WINDOW, RATES)
        _expect(decision[0].allowed, f"{label} rate-limit decision")
    _expect(_calls(servers, "evalsha") - before == CHECKS, f"{label}: one EVALSHA per decision")


@asynccontextmanager
async def _cases(options: Options) -> AsyncIterator[list[Case]]:
    del options  # the servers are always started here: the cluster and Sentinel need several
    async with AsyncExitStack() as stack:
        single = stack.enter_context(RedisServer())
        paired = stack.enter_context(RedisServer())
        follower = stack.enter_context(
            RedisServer(extra_args=("--replicaof", paired.host, str(paired.port)))
        )
        cluster = stack.enter_context(RedisClusterServers(replicas=0))
        sentinel = stack.enter_context(RedisSentinelServers())
        _relax([single, paired, follower, *cluster.nodes, *sentinel.servers])
        stores: dict[str, RedisStore] = {}
        for name, url, nodes in (
            ("one server", single.url, [single]),
            ("cluster", cluster.url, cluster.nodes),
            ("one server + replica", paired.url, [paired]),
            ("sentinel", sentinel.url, sentinel.servers),
        ):
            store = RedisStore.from_url(url, prefix=PREFIX)
            stack.push_async_callback(store.aclose)
            await store.set(SESSION, VALUE, TTL)
            await _prove_round_trips(name, store, nodes)
            stores[name] = store
        waiting = RedisStore.from_url(sentinel.url, prefix=PREFIX, wait_replicas=1)
        stack.push_async_callback(waiting.aclose)
        await waiting.set("w", VALUE, TTL)

        cases: list[Case] = []
        # The cluster (no replicas) against one server; Sentinel (whose primary replicates to a
        # replica) against one server with a replica, so that replication's own cost on this
        # 2-core host is not counted as routing.
        for name, base in (("cluster", "one server"), ("sentinel", "one server + replica")):
            for label, operation in (
                ("session read", partial(stores[name].get, SESSION)),
                ("rate-limit decision", partial(stores[name].hit, "bench-client", *_HIT)),
            ):
                base_store = stores[base]
                base_label = f"{label}: {base}"
                if not any(case.name == base_label for case in cases):
                    base_op = (
                        partial(base_store.get, SESSION)
                        if label == "session read"
                        else partial(base_store.hit, "bench-client", *_HIT)
                    )
                    cases.append(async_case(base_label, base_op))
                cases.append(async_case(f"{label}: {name}", operation, baseline=base_label))
        set_base = "set: sentinel primary"
        cases += [
            async_case(set_base, partial(stores["sentinel"].set, "w", VALUE, TTL)),
            async_case(
                "set + WAIT 1: sentinel primary",
                partial(waiting.set, "w", VALUE, TTL),
                baseline=set_base,
            ),
        ]
        yield cases


GROUP = Group(
    name="scale",
    title=(
        "The Redis store on one server, a 3-primary Redis Cluster and behind Sentinel (all on "
        "this host): each row divided by the same operation on the one server (the WAIT row by "
        "the plain set on the Sentinel primary). One round trip per row, proved before timing."
    ),
    iterations=1000,
    cases=_cases,
)

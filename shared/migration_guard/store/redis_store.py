"""The store behind the cache, the decision log and the event stream: real Redis when
``MIGRATION_GUARD_REDIS_URL`` is set, else an embedded in-process one (fakeredis, the same
redis-py client API, so both take the same code path).

URLs: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS; redis-py's query options,
e.g. ``?ssl_ca_certs=/etc/ssl/redis-ca.pem``), ``unix:///path/redis.sock?db=0``, and
``redis+sentinel://[user:password@]host:port[,host:port...]/service/db`` (Redis Sentinel: the
sentinels are asked for the master of ``service``; after a failover the next connection goes to
the new master).

``Store.run`` is the one place redis exceptions become ``StoreUnavailable``. After a failure the
store is marked degraded and not asked again for ``retry_s``; the first call after that tries
again, so the service recovers without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from migration_guard.errors import ConfigError, StoreUnavailable

T = TypeVar("T")

#: seconds a Redis command may take before the store counts as down
COMMAND_TIMEOUT_S = 0.5
#: connections to Redis; more concurrent commands (a node evacuation: hundreds of decisions at
#: once) wait for a free one instead of failing as if Redis were down
MAX_CONNECTIONS = 64
#: seconds a command may wait for a free connection (then the store counts as down)
POOL_WAIT_S = 2.0

#: the Redis URL that asks for the embedded in-process store instead (no Redis)
MEMORY_URL = "memory://"
SENTINEL_SCHEME = "redis+sentinel://"


def parse_sentinel_url(url: str) -> dict[str, Any]:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`` -> the sentinels,
    the service name, the db and the credentials (of the master; the sentinels get the same
    password). Raises ValueError naming what is wrong."""
    from urllib.parse import unquote

    rest = url[len(SENTINEL_SCHEME) :]
    hosts, _, path = rest.partition("/")
    creds, at, hosts = hosts.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = creds.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if colon else None)
    sentinels = []
    for part in hosts.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"sentinel {part.strip()!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if not parts:
        raise ValueError("no service name after the sentinels (redis+sentinel://host:26379/mymaster/0)")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"{'/'.join(parts)!r} is not service[/db]")
    return {
        "sentinels": sentinels,
        "service": unquote(parts[0]),
        "db": int(parts[1]) if len(parts) == 2 else 0,
        "username": username,
        "password": password,
    }


def _sentinel_client(url: str) -> Any:
    from redis.asyncio.sentinel import Sentinel

    parts = parse_sentinel_url(url)
    auth = {"username": parts["username"], "password": parts["password"]}
    timeouts = {"socket_timeout": COMMAND_TIMEOUT_S, "socket_connect_timeout": COMMAND_TIMEOUT_S}
    sentinel = Sentinel(parts["sentinels"], sentinel_kwargs={**timeouts, **auth})
    options: dict[str, Any] = {
        "db": parts["db"],
        "decode_responses": True,
        "retry_on_timeout": False,
        "health_check_interval": 0,
        "max_connections": MAX_CONNECTIONS,
        **timeouts,
        **auth,
    }
    return sentinel.master_for(parts["service"], **options)


def connect(url: str) -> tuple[Any, str]:
    """-> (an asyncio Redis client, "redis" | "embedded"). An empty url or ``memory://`` gives the
    embedded store (``serve`` accepts only ``memory://``, the explicit opt-in, outside the demo)."""
    if not url or url == MEMORY_URL:
        import fakeredis

        return fakeredis.FakeAsyncRedis(
            decode_responses=True,
            connection_pool_class=aioredis.BlockingConnectionPool,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT_S,
        ), "embedded"
    try:
        if url.startswith(SENTINEL_SCHEME):
            return _sentinel_client(url), "redis"
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT_S,
            decode_responses=True,
            socket_timeout=COMMAND_TIMEOUT_S,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
    except ValueError as exc:
        raise ConfigError(
            f"MIGRATION_GUARD_REDIS_URL is wrong: {exc} (expected e.g. redis://127.0.0.1:6379/0, "
            "rediss://redis.example:6380/0 or redis+sentinel://sentinel1:26379,sentinel2:26379/mymaster/0)"
        ) from None
    return client, "redis"


class Store:
    """A Redis client that fails fast and remembers whether Redis is up."""

    def __init__(self, client: Any, kind: str = "redis", *, retry_s: float = 1.0) -> None:
        self.client = client
        self.kind = kind
        self.retry_s = retry_s
        self.up = True
        self.last_error = ""
        self._retry_at = 0.0
        self.failures = 0
        #: (add commands to a pipeline, the caller's future) waiting for the next round trip
        self._batch: list[tuple[Callable[[Any], None], asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        #: round trips made by ``batched`` and the callers they served (how much was grouped)
        self.batches = 0
        self.batched_calls = 0

    @property
    def degraded(self) -> bool:
        return not self.up

    async def run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``await fn(client)``; raises StoreUnavailable (fast while Redis is known to be down)."""
        if not self.up and time.monotonic() < self._retry_at:
            raise StoreUnavailable(f"Redis is down ({self.last_error})")
        try:
            result = await fn(self.client)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, TimeoutError) as exc:
            self._down(exc)
            raise StoreUnavailable(f"Redis is down ({self.last_error})") from None
        except redis_errors.ResponseError as exc:  # e.g. a wrong type at a key, a read-only replica
            self._down(exc)
            raise StoreUnavailable(f"Redis refused a command ({exc})") from None
        if not self.up:
            self.up = True
            self.last_error = ""
        return result

    async def batched(self, add: Callable[[Any], None]) -> list[Any]:
        """The results of the commands ``add`` puts on a pipeline, sent together with those of
        every other caller waiting at that moment: one round trip for a burst (group commit; a
        node evacuation's hundreds of decisions share a few). A command's own error (e.g.
        NOSCRIPT) comes back in the list; Redis being down raises StoreUnavailable."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._batch.append((add, future))
        if self._drainer is None or self._drainer.done() or self._drainer.get_loop() is not loop:
            self._drainer = loop.create_task(self._drain())
        result: list[Any] = await future
        return result

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._batch:
            batch = [(add, f) for add, f in self._batch if f.get_loop() is loop and not f.done()]
            self._batch = []
            if not batch:
                continue
            sizes: list[int] = []

            async def send(r: Any, batch: list = batch, sizes: list[int] = sizes) -> Any:
                pipe = r.pipeline(transaction=False)
                for add, _ in batch:
                    before = len(pipe.command_stack)
                    add(pipe)
                    sizes.append(len(pipe.command_stack) - before)
                return await pipe.execute(raise_on_error=False)

            try:
                results = await self.run(send)
            except StoreUnavailable as exc:  # every caller of the batch hears it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(StoreUnavailable(str(exc)))
                continue
            except BaseException:  # cancelled (the loop is closing): the callers are too
                for _, future in batch:
                    future.cancel()
                raise
            self.batches += 1
            self.batched_calls += len(batch)
            start = 0
            for (_, future), size in zip(batch, sizes, strict=True):
                if not future.done():
                    future.set_result(results[start : start + size])
                start += size

    def _down(self, exc: BaseException) -> None:
        self.up = False
        self.failures += 1
        self.last_error = (str(exc) or type(exc).__name__).splitlines()[0][:200]
        self._retry_at = time.monotonic() + self.retry_s

    async def ping(self) -> bool:
        """Try Redis now (ignoring the back-off); True when it answers."""
        self._retry_at = 0.0
        try:
            await self.run(lambda r: r.ping())
        except StoreUnavailable:
            return False
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection must not fail shutdown
            await self.client.aclose()

"""A Redis client that can be made to fail (``down``), for the store's outage paths."""

from __future__ import annotations

import fakeredis
from redis import exceptions as redis_errors


class FlakyRedis:
    """A fakeredis client whose every command fails with ConnectionError while ``down``."""

    def __init__(self, inner=None) -> None:
        self.inner = inner or fakeredis.FakeAsyncRedis(decode_responses=True)
        self.down = False

    def pipeline(self, *args, **kwargs):
        """The inner client's pipeline, whose ``execute`` fails the same way while ``down``."""
        pipe = self.inner.pipeline(*args, **kwargs)
        execute = pipe.execute

        async def failing_execute(*a, **kw):
            if self.down:
                pipe.reset()
                raise redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
            return await execute(*a, **kw)

        pipe.execute = failing_execute
        return pipe

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        async def call(*args, **kwargs):
            if self.down:
                raise redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
            return await attr(*args, **kwargs)

        return call

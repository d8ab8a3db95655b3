"""A JetStream object store holding blobs that travel beside input messages.

``roomserver.input.statelists`` keeps large ``state_event_ids`` lists here (see its docstring
for the life of a blob). The bucket is ``<prefix>InputBlobs``, file storage, with the input
stream's max age as its TTL: a blob never outlives the messages that may reference it by much,
and an orphan (a publish that failed after its blob was stored) expires by itself.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from roomserver.bus.config import BusConfig


def blob_bucket_name(prefix: str) -> str:
    return f"{prefix}InputBlobs"


class JetStreamBlobStore:
    """``roomserver.input.statelists.BlobStore`` over a JetStream object store."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    @classmethod
    async def open(cls, js: JetStreamContext, config: BusConfig) -> JetStreamBlobStore:
        bucket = blob_bucket_name(config.prefix)
        try:
            store = await js.object_store(bucket)
        except BucketNotFoundError:  # the first process creates it (a second: the same)
            store = await js.create_object_store(
                bucket,
                config=ObjectStoreConfig(
                    ttl=config.input_max_age,
                    storage=StorageType.FILE,
                    replicas=config.replicas,
                ),
            )
        return cls(store)

    async def put(self, name: str, data: bytes) -> None:
        await self._store.put(name, data)

    async def get(self, name: str) -> bytes | None:
        try:
            result = await self._store.get(name)
        except (ObjectNotFoundError, NotFoundError):
            return None
        return result.data

    async def names(self) -> set[str]:
        """The names of the blobs held (for operators and tests)."""
        try:
            return {info.name for info in await self._store.list() if not info.deleted}
        except NotFoundError:  # nats-py: "no objects found"
            return set()

    async def delete(self, name: str) -> None:
        try:
            await self._store.delete(name)
        except (ObjectNotFoundError, NotFoundError):
            return

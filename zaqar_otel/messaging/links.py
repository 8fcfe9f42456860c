"""Producer -> consumer links: the posting span, kept beside each message.

When a traced request posts messages, the span context of its ``send``
operation is stored next to each message, in the message store, with the
message's own TTL: a Redis key ``zaqar_otel.link.<message id>`` or a document
in the ``zaqar_otel_links`` collection (TTL index) of the queue's MongoDB
partition. Never inside the body consumers read; only the trace and span id
(no trace state, no baggage). A later traced list, get, claim or pop that
returns those messages adds span links to the posting spans on its
``receive`` operation (``zaqar_otel.messaging.operations``), so Jaeger can jump from
the consumer to the producer.

Untraced requests touch nothing: the wrappers return at once when no traced
operation is open. Enabled by ``[profiler] trace_message_links``::

    instrument_stores(patches)      # wraps the Redis and MongoDB controllers
"""

from __future__ import annotations

import datetime
import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from opentelemetry import trace

from zaqar_otel import patching
from zaqar_otel.messaging import operations

LOG = logging.getLogger(__name__)

REDIS_PREFIX = "zaqar_otel.link."
MONGO_COLLECTION = "zaqar_otel_links"
_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)


def encode(span_context: trace.SpanContext) -> str:
    return f"{span_context.trace_id:032x}{span_context.span_id:016x}"


def decode(value: str | bytes | None) -> trace.SpanContext | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not value or len(value) != 48:
        return None
    try:
        ids = int(value[:32], 16), int(value[32:], 16)
    except ValueError:
        return None
    found = trace.SpanContext(*ids, is_remote=True, trace_flags=_SAMPLED)
    return found if found.is_valid else None


class LinkStore(Protocol):
    def save(self, entries: Sequence[tuple[str, int]], value: str) -> None: ...
    def load(self, message_ids: Sequence[str]) -> list[str | bytes | None]: ...


#: A link command waits at most this long for Redis, and is never retried.
LINK_TIMEOUT = 0.25


class Connections:
    """What the link stores keep from one request to the next (one for the
    stores ``instrument_stores`` wraps): a fail-fast Redis client per Zaqar
    pool, and the MongoDB databases whose expiry index exists."""

    def __init__(self) -> None:
        self._redis_lock = threading.Lock()
        self._redis: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._index_lock = threading.Lock()
        self._indexed: set[tuple[int, str]] = set()

    def fail_fast(self, client: Any) -> Any:
        """A client on the same Redis as ``client``, without retries and with
        short timeouts: Zaqar's own answer is ready when a link is written, and
        must not wait out redis-py's retries (about 4 s) when Redis is gone.

        Its own small pool, made once per Zaqar pool; a pool of another kind
        (Sentinel) keeps Zaqar's client.
        """
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        pool = client.connection_pool
        if type(pool) is not redis.ConnectionPool:
            return client
        with self._redis_lock:
            found = self._redis.get(pool)
            if found is None:
                kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0),
                          "socket_timeout": LINK_TIMEOUT,
                          "socket_connect_timeout": LINK_TIMEOUT}
                found = redis.Redis(connection_pool=redis.ConnectionPool(
                    connection_class=pool.connection_class, max_connections=16,
                    **kwargs))
                self._redis[pool] = found
            return found

    def indexed(self, database: Any, collection: Any) -> None:
        """The expiry index on ``collection`` of ``database``, made once."""
        key = (id(database.client), database.name)
        if key not in self._indexed:
            with self._index_lock:
                collection.create_index("e", expireAfterSeconds=0,
                                        name="zaqar_otel_expiry")
                self._indexed.add(key)


class RedisLinks:
    """Keys beside the message keys, expiring with the messages.

    :param client: the client to write with (``Connections.fail_fast``).
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def save(self, entries: Sequence[tuple[str, int]], value: str) -> None:
        with self._client.pipeline(transaction=False) as pipe:
            for message_id, ttl in entries:
                pipe.set(REDIS_PREFIX + message_id, value, ex=max(int(ttl), 1))
            pipe.execute()

    def load(self, message_ids: Sequence[str]) -> list[str | bytes | None]:
        return list(self._client.mget([REDIS_PREFIX + i for i in message_ids]))


class MongoLinks:
    """Documents in the queue's partition database, removed by a TTL index."""

    def __init__(self, database: Any, connections: Connections) -> None:
        self._collection = database[MONGO_COLLECTION]
        connections.indexed(database, self._collection)

    def save(self, entries: Sequence[tuple[str, int]], value: str) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        self._collection.insert_many(
            [{"_id": message_id, "c": value,
              "e": now + datetime.timedelta(seconds=max(int(ttl), 1))}
             for message_id, ttl in entries], ordered=False)

    def load(self, message_ids: Sequence[str]) -> list[str | bytes | None]:
        found = {d["_id"]: d["c"] for d in self._collection.find(
            {"_id": {"$in": list(message_ids)}}, {"c": 1})}
        return [found.get(i) for i in message_ids]


StoreOf = Callable[[Any, Any, str | None], LinkStore]


def _failed(what: str) -> None:
    # Links are a convenience: never fail the message operation for them.
    LOG.debug("zaqar-otel: %s message links failed", what, exc_info=True)


def _after_post(store: LinkStore, messages: Sequence[dict[str, Any]],
                ids: Sequence[str]) -> None:
    operation = operations.current()
    if operation is None or not ids:
        return
    try:
        ttls = [int(m.get("ttl", 0)) for m in messages]
        store.save(list(zip((str(i) for i in ids), ttls, strict=False)),
                   encode(operation.span.get_span_context()))
    except Exception:
        _failed("saving")


def _link(store: LinkStore, operation: operations.Operation, ids: list[str]) -> None:
    ids = [i for i in ids if i not in operation.seen]
    if not ids:
        return
    operation.seen.update(ids)
    try:
        found = [decode(v) for v in store.load(ids[:operations.MAX_LINKS])]
        operation.add_links([c for c in found if c is not None])
    except Exception:
        _failed("loading")


def _collecting(messages: Iterable[Any], done: Callable[[list[str]], None]
                ) -> Iterator[Any]:
    """Pass ``messages`` through, then ``done(ids)`` once all were seen."""
    ids: list[str] = []
    for message in messages:
        if isinstance(message, dict) and "id" in message:
            ids.append(str(message["id"]))
        yield message
    done(ids)


def _listing(listing: Iterable[Any], done: Callable[[list[str]], None]
             ) -> Iterator[Any]:
    # Zaqar's list yields a lazy iterator of messages, then the next marker.
    for item in listing:
        if hasattr(item, "__next__") or isinstance(item, list):
            yield _collecting(item, done)
        else:
            yield item


def _wrap(patches: patching.Patches, cls: type, name: str,
          make: Callable[[Callable[..., Any], StoreOf], Callable[..., Any]],
          store_of: StoreOf) -> None:
    patches.patch(cls, name,
                  lambda method: functools.wraps(method)(make(method, store_of)))


def _post(original: Callable[..., Any], store_of: StoreOf) -> Callable[..., Any]:
    def post(self: Any, queue: str, messages: Iterable[dict[str, Any]],
             client_uuid: Any, project: str | None = None) -> Any:
        if operations.current() is None:
            return original(self, queue, messages, client_uuid, project)
        messages = list(messages)  # read twice: by the store, then for TTLs
        ids = original(self, queue, messages, client_uuid, project)
        try:
            _after_post(store_of(self, queue, project), messages, ids)
        except Exception:
            _failed("saving")
        return ids

    return post


def _receiving(original: Callable[..., Any], store_of: StoreOf) -> Callable[..., Any]:
    """A method returning messages (a dict, a list, an iterator, a listing)."""
    names = list(inspect.signature(original).parameters)[1:]
    listing = original.__name__ == "list"

    def receive(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        operation = operations.current()
        if operation is None:
            return result
        try:
            bound = {**dict(zip(names, args, strict=False)), **kwargs}
            store = store_of(self, bound.get("queue") or bound.get("queue_name"),
                             bound.get("project"))
        except Exception:
            _failed("finding the store of")
            return result
        done = functools.partial(_link, store, operation)
        try:
            return _linked(result, done, listing)
        except Exception:
            _failed("reading the messages for")
            return result

    return receive


def _linked(result: Any, done: Callable[[list[str]], None], listing: bool) -> Any:
    """``result`` as the caller gets it, ``done(ids)`` called once its
    messages are known (at once, or when a lazy listing is consumed)."""
    if isinstance(result, dict):  # get: one message
        done([str(result["id"])] if "id" in result else [])
        return result
    if isinstance(result, tuple):  # claim create: (claim, messages)
        claim, messages = result
        if isinstance(messages, list):
            done([str(m["id"]) for m in messages if isinstance(m, dict) and "id" in m])
            return result
        return claim, _collecting(messages, done)
    if isinstance(result, list):  # pop
        done([str(m["id"]) for m in result if isinstance(m, dict) and "id" in m])
        return result
    return _listing(result, done) if listing else _collecting(result, done)


def _wrap_redis(patches: patching.Patches, connections: Connections) -> None:
    from zaqar.storage.redis import claims, messages

    def store(ctrl: Any, queue: str, project: str | None) -> LinkStore:
        return RedisLinks(connections.fail_fast(ctrl._client))

    _wrap_store(patches, messages.MessageController, claims.ClaimController,
                store, store)


def _wrap_mongodb(patches: patching.Patches, connections: Connections) -> None:
    from zaqar.storage.mongodb import claims, messages

    def store(ctrl: Any, queue: str, project: str | None) -> LinkStore:
        return MongoLinks(ctrl._collection(queue, project).database, connections)

    def claims_store(ctrl: Any, queue: str, project: str | None) -> LinkStore:
        return store(ctrl.driver.message_controller, queue, project)

    _wrap_store(patches, messages.MessageController, claims.ClaimController,
                store, claims_store)
    # Its own post (FIFO ordering) bypasses MessageController.post.
    _wrap(patches, messages.FIFOMessageController, "post", _post, store)


def _wrap_store(patches: patching.Patches, messages_cls: type, claims_cls: type,
                store: Any, claims_store: Any) -> None:
    _wrap(patches, messages_cls, "post", _post, store)
    for name in ("list", "get", "bulk_get", "pop"):
        _wrap(patches, messages_cls, name, _receiving, store)
    _wrap(patches, claims_cls, "create", _receiving, claims_store)


def instrument_stores(patches: patching.Patches) -> list[str]:
    """Wrap the Redis and MongoDB message and claim controllers (idempotent;
    undone with ``patches``).

    A store whose client library is missing (no pymongo on a Redis-only
    deployment) is left out with one line; returns the stores wrapped.
    """
    connections = Connections()
    wrapped = []
    for name, wrap in (("redis", _wrap_redis), ("mongodb", _wrap_mongodb)):
        try:
            wrap(patches, connections)
            wrapped.append(name)
            continue
        except ImportError as exc:
            missing = exc.name or str(exc)
        LOG.info("zaqar-otel: no message links on %s stores: %s is not "
                 "installed", name, missing)
    return wrapped

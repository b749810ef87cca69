"""Bulk ingestion: an agent receives its input topics' messages a whole fetch at a time.

Faust hands each consumed message to its agent alone: a lock, a decoded event, a queue put,
a stream step with its sensors and processors, and one acknowledgement per message; about
150 µs of a core per message on 2 cores, more than the worker's whole scoring stage. Here
the app's consumer (:class:`stream.runtime.recovery.SafeConsumer`) gives the messages of the
topics routed with :func:`route_in_bulk` to a channel, one list per fetch, and the agent
reading that channel takes what has arrived with :func:`fetched_batches` and acknowledges it
with :func:`acknowledge` once its outputs are durable.

What Faust's per-message path guarantees is kept:

* flow control: the channel's queue is one of the app's flow-control queues, cleared when a
  rebalance begins, so no message fetched before the rebalance is processed after it;
  :func:`fetched_batches` also drops messages of an older consumer generation or fetched
  while flow is stopped, as Faust's stream does;
* commits: the messages of a batch are tracked as unacknowledged when it is taken, so that a
  rebalance waits for them (``Consumer.wait_empty``), and the committed offset of a
  partition moves only over acknowledged messages (``Consumer.ack``);
* order: one partition's messages stay in offset order, fetch after fetch.

Every worker test (restarts, kills, exactly-once, rebalances with three workers) runs through
this path; the first of ``tests/stream/worker/test_worker.py`` checks that every input message
is counted and every offset committed.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import cast

import faust
from faust.types import AppT, ChannelT, Message, StreamT

_ROUTES: weakref.WeakKeyDictionary[AppT, dict[str, ChannelT]] = weakref.WeakKeyDictionary()
FETCHES_QUEUED = 8  # fetched lists a bulk channel holds before the consumer waits


def bulk_channel(app: faust.App) -> ChannelT:
    """A channel for :func:`route_in_bulk`: each value is the list of one fetch's messages."""
    return app.channel(maxsize=FETCHES_QUEUED)


def route_in_bulk(app: faust.App, channel: ChannelT, topics: Iterable[faust.TopicT]) -> None:
    """Deliver the messages of ``topics`` to ``channel`` in lists, one per fetch, instead of
    one by one to whatever streams them. The topics are subscribed as an agent's would be."""
    routes = _ROUTES.setdefault(app, {})
    for topic in topics:
        app.topics.add(topic)
        for name in topic.topics:
            routes[name] = channel


def bulk_routes(app: AppT) -> dict[str, ChannelT]:
    """Topic name -> the channel its messages go to in bulk (the consumer reads this)."""
    return _ROUTES.get(app, {})


async def fetched_batches(app: faust.App, stream: StreamT, max_messages: int) -> AsyncIterator[list[Message]]:
    """The messages an agent's bulk channel (its ``stream``) receives: whatever has arrived
    since the last batch, up to ``max_messages``, waiting only while nothing has. Each batch
    is tracked as unacknowledged; :func:`acknowledge` it when its work is durable."""
    queue = cast(ChannelT, stream.channel).queue
    consumer = app.consumer
    unacked = consumer.unacked
    held: list[Message] = []
    while True:
        if not held:
            try:
                held = list(await queue.get())
            except StopAsyncIteration:  # the channel's queue is closed: the worker is stopping
                return
        while len(held) < max_messages and not queue.empty():
            held.extend(queue.get_nowait())
        generation = app.consumer_generation_id
        if not app.flow_control.is_active():
            held = []
            continue
        current = [m for m in held[:max_messages] if m.generation_id == generation]
        held = held[max_messages:]
        if not current:
            continue
        for message in current:
            message.tracked = True
            unacked.add(message)
        yield current


def acknowledge(app: faust.App, messages: Sequence[Message]) -> None:
    """Let the consumer commit past ``messages`` (each partition up to its first unacknowledged one)."""
    ack = app.consumer.ack
    for message in messages:
        ack(message)

"""``shiftwatch demand``: inventory demand signals, per category and event-time window.

A Faust app of its own (consumer group ``<app id>-demand``) in two stages:

1. ``fan_out`` reads ``interest.shifts`` (keyed by user) and sends one
   :class:`~stream.services.demand_counts.CategoryMove` per category a shift touches to the internal topic
   ``<app id>-demand-category-moves``, keyed by category.
2. ``count`` reads the moves, so each category's state lives in one partition, and adds each
   to the category's windows in two windowed tables, ``demand_tumbling`` (Faust
   ``.tumbling()``) and ``demand_hopping`` (``.hopping()``), and to ``demand_totals`` (since
   the start). Every row remembers the offset of the last move it counted, so a redelivered
   move is not counted twice in any row; the totals row also keeps the category's last
   :data:`RECENT_SHIFTS` shift ids, so a second copy of a move (the worker or ``fan_out``
   restarted after publishing and republished) is not counted at all. Rows are written
   after the batch's outputs are on Kafka (:mod:`stream.runtime.durable`).

Windows run on event time (the shifts' ``ts``). After each batch, ``fan_out`` announces how
far each shifts partition it read has come (a :class:`~stream.services.demand_counts.Progress` to every moves
partition, after that batch's moves); a moves partition's watermark is the least of what
every shifts partition announced, so one partition of users running ahead of another (a
fast replay, a worker catching up) does not make the other's shifts late. A window closes
when the watermark passes its end by ``demand_grace_s`` (which covers the reordering the
worker allows within a user, ``SHIFTWATCH_LATENESS_S``); it is then published to
``inventory.category-demand`` and deleted from its table, and a move for it arriving later is
counted as late. A shifts partition that never carries a shift holds the windows open.
Faust's own window expiry is not used: it compares window ends with the wall clock (every
window of a replayed log would close at once), and its ``on_window_close`` skips a window
whose start is not later than the last window closed in any partition. The announced times
are kept in the ``demand_clock`` table, so a restarted service neither reopens nor
republishes closed windows.

``GET /demand/top-movers?window=all|tumbling|hopping&n=10[&start=ms]`` answers with the
categories that gained and lost most net mass, from the partitions this process owns;
``GET /demand/stats`` with this process's counters, the moves counted in the totals table
(``counted``), the open windows and each moves partition's watermark.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import EventT
from faust.types.windows import WindowT
from faust.windows import HoppingWindow, TumblingWindow

from stream.runtime.app import batches, new_table
from stream.runtime.durable import PendingRows
from stream.services.demand_counts import (
    CategoryMove,
    Demand,
    Progress,
    category_moves,
    parse_moves_message,
    top_movers,
    watermark,
)
from stream.services.downstream import Stats, downstream_app, shift_batches, shifts_topic
from stream.settings import Settings
from topics.records import CategoryDemand
from topics.specs import DEMAND

RECENT_SHIFTS = 512  # shift ids remembered per category: a copy of a move comes within a batch or two of it
WINDOW_KINDS = ("tumbling", "hopping")

WindowKey = tuple[str, tuple[float, float]]  # (category, (start s, Faust's end s)) as Faust keys windowed tables


def window_bounds(key: WindowKey, size_s: float) -> tuple[int, int]:
    """Start and exclusive end of a window, epoch milliseconds."""
    start_ms = round(key[1][0] * 1000)
    return start_ms, start_ms + round(size_s * 1000)


def as_window_key(key: Any) -> WindowKey:
    """A windowed table key as stored (JSON lists after recovery) back in Faust's tuple form."""
    category, (start, end) = key
    return category, (float(start), float(end))


HELP = {
    "shifts": "Interest shifts read",
    "unreadable": "Messages on interest.shifts that are not shifts (dead-lettered as not_a_shift)",
    "moves": "Category moves counted (one per category a shift touches)",
    "duplicate_moves": "Copies of a move already counted (a shift published or fanned out twice), not counted again",
    "redelivered_moves": "Moves read again after a restart, already counted (each row knows the last offset it counted)",
    "late": "Moves that came after their window had closed, by window kind (counted in the totals only)",
    "published": "Closed windows published to inventory.category-demand, by window kind",
}


@dataclass(frozen=True)
class WindowedTable:
    """A table of one window kind's open windows, keyed ``(category, (start s, end s))``."""

    kind: str
    size_s: float
    window: WindowT
    table: faust.Table

    @classmethod
    def create(cls, app: faust.App, kind: str, window: WindowT, size_s: float, settings: Settings) -> WindowedTable:
        table = new_table(app, f"demand_{kind}", settings, help=f"category demand per {kind} window")
        table.using_window(window)  # Faust's windowed changelog (compacted and deleted); keys are written as is
        return cls(kind, size_s, window, table)

    def keys_at(self, category: str, ts_ms: int) -> list[WindowKey]:
        """The windows an event at ``ts_ms`` falls in."""
        return [(category, window_range) for window_range in self.window.ranges(ts_ms / 1000)]


def create_demand_app(settings: Settings) -> faust.App:
    """The demand service's Faust app: what ``shiftwatch demand`` runs."""
    return DemandService(settings).app


class DemandService:
    """The two agents, the tables and the pages of one ``shiftwatch demand`` process."""

    def __init__(self, settings: Settings):
        if settings.demand_hopping_s % settings.demand_hop_s:
            raise ValueError(
                f"SHIFTWATCH_DEMAND_HOP_S={settings.demand_hop_s:g} must divide "
                f"SHIFTWATCH_DEMAND_HOPPING_S={settings.demand_hopping_s:g}"
            )
        self.settings = settings
        self.stats: Stats = {
            "shifts": 0,
            "unreadable": 0,
            "moves": 0,
            "duplicate_moves": 0,
            "redelivered_moves": 0,
            "late": dict.fromkeys(WINDOW_KINDS, 0),
            "published": dict.fromkeys(WINDOW_KINDS, 0),
        }
        app = self.app = downstream_app(settings, "demand", self.stats, HELP, {"late": "window", "published": "window"})
        self.moves_topic = app.topic(
            f"{app.conf.id}-category-moves",
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            internal=True,
        )
        self.windows = {
            "tumbling": WindowedTable.create(
                app,
                "tumbling",
                TumblingWindow(settings.demand_tumbling_s),
                settings.demand_tumbling_s,
                settings,
            ),
            "hopping": WindowedTable.create(
                app,
                "hopping",
                HoppingWindow(settings.demand_hopping_s, settings.demand_hop_s),
                settings.demand_hopping_s,
                settings,
            ),
        }
        self.totals = new_table(
            app,
            "demand_totals",
            settings,
            help="category demand since the start, and its recent shift ids",
        )
        self.clocks = new_table(
            app,
            "demand_clock",
            settings,
            help="'partition N' -> shifts partition -> event time (ms) announced",
        )
        self.grace_ms = round(settings.demand_grace_s * 1000)
        self.open_windows: dict[int, set[tuple[str, WindowKey]]] = defaultdict(set)
        self.indexed = False
        self._register()

    def _register(self) -> None:
        app = self.app

        @app.on_partitions_revoked.connect
        async def forget_index(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self.indexed = False

        @app.agent(shifts_topic(app))
        async def fan_out(stream: faust.StreamT) -> None:
            await self.fan_out(stream)

        @app.agent(self.moves_topic)
        async def count(stream: faust.StreamT) -> None:
            await self.count(stream)

        @app.page("/demand/top-movers")
        async def movers(web: Any, request: Any) -> Any:
            return self.movers(web, request)

        @app.page("/demand/stats")
        async def stats_page(web: Any, request: Any) -> Any:
            return self.stats_page(web)

    def active_partitions(self) -> set[int]:
        moves_name = self.moves_topic.get_topic_name()
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == moves_name}

    def ensure_index(self) -> None:
        """Which windows are open, by partition: rebuilt from the tables after a start or a rebalance
        (the store also holds the partitions this process keeps as a standby)."""
        if self.indexed:
            return
        self.open_windows.clear()
        active = self.active_partitions()
        for kind, windowed in self.windows.items():
            for key, row in windowed.table.items():
                if row["partition"] in active:
                    self.open_windows[row["partition"]].add((kind, as_window_key(key)))
        self.indexed = True

    # -- stage 1: shifts -> category moves ----------------------------------------

    async def fan_out(self, stream: faust.StreamT) -> None:
        app = self.app
        moves_name = self.moves_topic.get_topic_name()
        async for batch in shift_batches(app, stream, self.settings, self.stats):
            sent = []
            reached: dict[int, int] = {}  # shifts partition -> the latest shift time in this batch
            for event, shift in batch:
                if shift is None:
                    continue  # not subscribed to forget requests: the counts hold no user ids
                source = event.message.partition
                reached[source] = max(reached.get(source, shift["ts"]), shift["ts"])
                for move in category_moves(shift):
                    sent.append(await self._send(moves_name, move.category_id.encode(), move.dumps()))
            # after the moves: the same producer keeps each partition in order
            for source, event_time in reached.items():
                progress = Progress(source, event_time).dumps()
                for partition in range(self.settings.partitions):
                    sent.append(await self._send(moves_name, None, progress, partition))
            await asyncio.gather(*sent)

    async def _send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> Any:
        return await self.app.producer.send(topic, key, value, partition=partition, timestamp=None, headers=None)

    # -- stage 2: moves -> windows ------------------------------------------------

    async def count(self, stream: faust.StreamT) -> None:
        async for batch in batches(stream, self.settings):
            self.ensure_index()
            rows = PendingRows()
            sent: list[Any] = []
            for event in batch:
                message = parse_moves_message(event.message.value or b"")
                if isinstance(message, Progress):
                    await self.advance(event, message, rows, sent)
                else:
                    self.count_move(event, message, rows)
            await asyncio.gather(*sent)
            await rows.write(self.app)

    async def advance(self, event: EventT, progress: Progress, rows: PendingRows, sent: list[Any]) -> None:
        """Take in a shifts partition's progress; close the windows the watermark has passed."""
        key = clock_key(event.message.partition)
        announced: dict[str, int] = rows.get(self.clocks, event, key) or {}
        source = str(progress.source_partition)
        if progress.event_time <= announced.get(source, -1):
            return
        announced = {**announced, source: progress.event_time}
        rows.set(self.clocks, event, key, announced)
        now = watermark(announced, self.settings.partitions)
        if now is not None:
            await self.close_windows(event, now, rows, sent)

    def count_move(self, event: EventT, move: CategoryMove, rows: PendingRows) -> None:
        message, stats = event.message, self.stats
        now = watermark(rows.get(self.clocks, event, clock_key(message.partition)) or {}, self.settings.partitions)
        total = rows.get(self.totals, event, move.category_id)
        recent: dict[str, int] = {} if total is None else total["recent"]
        if recent.get(move.shift_id, message.offset) != message.offset:
            stats["duplicate_moves"] += 1
            return
        redelivered = total is not None and total["offset"] >= message.offset  # counted before a restart
        stats["redelivered_moves" if redelivered else "moves"] += 1
        recent = {**{s: o for s, o in recent.items() if s != move.shift_id}, move.shift_id: message.offset}
        counted = add_to(rows, self.totals, event, move.category_id, move)
        rows.set(
            self.totals, event, move.category_id, {**counted, "recent": dict(list(recent.items())[-RECENT_SHIFTS:])}
        )
        for kind, windowed in self.windows.items():
            for key in windowed.keys_at(move.category_id, move.ts):
                if now is not None and window_bounds(key, windowed.size_s)[1] + self.grace_ms <= now:
                    if not redelivered:  # a redelivered move was in the window it closed with
                        stats["late"][kind] += 1
                    continue
                rows.set(windowed.table, event, key, add_to(rows, windowed.table, event, key, move))
                self.open_windows[message.partition].add((kind, key))

    async def close_windows(self, event: EventT, now: int, rows: PendingRows, sent: list[Any]) -> None:
        partition = event.message.partition
        due = []
        for kind, key in self.open_windows[partition]:
            start_ms, end_ms = window_bounds(key, self.windows[kind].size_s)
            if end_ms + self.grace_ms <= now:
                due.append((end_ms, kind, key[0], start_ms, key))
        for end_ms, kind, category, start_ms, key in sorted(due):
            table = self.windows[kind].table
            row = rows.get(table, event, key)
            if row is not None:
                record = CategoryDemand(
                    demand_id=f"{kind}:{category}:{start_ms}",
                    category_id=category,
                    window=kind,
                    window_start=start_ms,
                    window_end=end_ms,
                    **Demand.from_row(row).as_dict(),
                    model_versions=row["model_versions"],
                )
                sent.append(await self._send(DEMAND.name, category.encode(), record.dumps()))
                self.stats["published"][kind] += 1
                rows.set(table, event, key, None)
            self.open_windows[partition].discard((kind, key))

    # -- pages --------------------------------------------------------------------

    def movers(self, web: Any, request: Any) -> Any:
        query = request.query
        window = query.get("window", "all")
        try:
            n = int(query.get("n", "10"))
            start = int(query["start"]) if "start" in query else None
        except ValueError:
            return web.json({"error": "n and start must be integers"}, status=400)
        if window != "all" and window not in self.windows:
            return web.json({"error": f"window must be all, {' or '.join(WINDOW_KINDS)}"}, status=400)
        answer: dict[str, Any] = {"window": window}
        if window == "all":
            active = self.active_partitions()
            demand = {c: Demand.from_row(row) for c, row in self.totals.items() if row["partition"] in active}
        else:
            self.ensure_index()
            demand, bounds = self.window_demand(window, start)
            answer.update(bounds)
        rising, falling = top_movers(demand, n)
        answer["rising"] = [{"category_id": c, **d.as_dict()} for c, d in rising]
        answer["falling"] = [{"category_id": c, **d.as_dict()} for c, d in falling]
        return web.json(answer)

    def window_demand(self, kind: str, start: int | None) -> tuple[dict[str, Demand], dict[str, Any]]:
        """Demand in the open window of ``kind`` starting at ``start`` (default: the latest full one)."""
        windowed = self.windows[kind]
        if start is None:
            marks = (watermark(announced, self.settings.partitions) for announced in self.clocks.values())
            latest = max(filter(None, marks), default=None)
            if latest is None:
                return {}, {"window_start": None, "window_end": None}
            start = round(windowed.window.ranges(latest / 1000)[0][0] * 1000)
        demand = {}
        for keys in self.open_windows.values():
            for window_kind, key in keys:
                if window_kind == kind and window_bounds(key, windowed.size_s)[0] == start:
                    row = windowed.table.get(key)
                    if row is not None:
                        demand[key[0]] = Demand.from_row(row)
        return demand, {"window_start": start, "window_end": start + round(windowed.size_s * 1000)}

    def stats_page(self, web: Any) -> Any:
        active = self.active_partitions()
        # from the totals table: survives restarts
        counted = sum(row["users_in"] + row["users_out"] for row in self.totals.values() if row["partition"] in active)
        return web.json(
            {
                **self.stats,
                "counted": counted,
                "open_windows": sum(map(len, self.open_windows.values())),
                "watermark": {k: watermark(a, self.settings.partitions) for k, a in self.clocks.items()},
            }
        )


def clock_key(partition: int) -> str:
    return f"partition {partition}"


def add_to(rows: PendingRows, table: faust.Table, event: EventT, key: Any, move: CategoryMove) -> dict[str, Any]:
    """``table[key]`` with ``move`` counted, unless that row counted this message before."""
    row: dict[str, Any] | None = rows.get(table, event, key)
    if row is not None and row["offset"] >= event.message.offset:
        return row
    demand = Demand() if row is None else Demand.from_row(row)
    versions = sorted({*(row or {}).get("model_versions", []), move.model_version})
    counted = {**demand.add(move).as_dict(), "model_versions": versions}
    return {**(row or {}), **counted, "offset": event.message.offset, "partition": event.message.partition}

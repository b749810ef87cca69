"""The worker's web API and live dashboard (Faust pages on ``SHIFTWATCH_WEB_PORT``).

=============================  ======================================================
``GET /healthz``               alive: the event loop answers
``GET /readyz``                200 once the tables are recovered (503 before)
``GET /users/{id}/interests``  current distribution, profile and recent shifts, from the
                               user's row (routed to the worker that owns it)
``GET /users/{id}/timeline``   the user's kept events with the model's top-category
                               probabilities after each, recomputed over that window
``GET /shifts/recent``         this worker's latest shifts (``?limit=N``)
``GET /shifts/stream``         server-sent events: each shift as it is published
``GET /stats``                 counters and the latency histogram for the dashboard
``GET /categories``            category names (``SHIFTWATCH_CATEGORY_NAMES``), for labels
``GET /dashboard``             the live dashboard (static HTML and JS)
=============================  ======================================================

The user-level pages (``/users/...`` and ``/shifts/...``) need ``Authorization: Bearer
<SHIFTWATCH_API_TOKEN>`` when a token is set (401 without it). Under pseudonymisation a user
page takes the raw id and looks up its pseudonym (or a pseudonym as the dashboard has it),
answers with the pseudonym only, and answers a user it never saw as it answers one it
forgot: the same 404.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
from aiohttp import web as aiohttp_web
from prometheus_client import CollectorRegistry

from model.data.loaders import UserSequence
from model.net.checkpoint import Checkpoint
from model.online.scorer import interest_along
from stream.runtime.recovery import recovered
from stream.settings import Settings
from stream.worker.hotswap import Loaded
from stream.worker.live import ShiftFeed
from stream.worker.privacy import Pseudonymiser
from stream.worker.rows import decode_row
from stream.worker.state import UserState

DASHBOARD = Path(__file__).with_name("dashboard.html")
UserAnswer = Callable[[Any, str, UserState], Awaitable[Any]]  # (web, user id, row) -> response
TIMELINE_CATEGORIES = 5


NOT_FOUND = {"error": "no events for this user"}


def add_views(
    app: faust.App,
    users: Any,
    serving: Callable[[], Loaded],
    feed: ShiftFeed,
    registry: CollectorRegistry,
    pseudonyms: Pseudonymiser,
    settings: Settings,
) -> None:
    """``serving()``: the checkpoint and detector the worker serves now (they change on a hot-swap)."""
    guarded = token_guard(settings.api_token)
    names = load_category_names(Path(settings.category_names)) if settings.category_names else {}

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """The model is loaded before the app exists; ready once the tables are recovered."""
        ready = recovered(app) and not app.rebalancing
        body = {"ready": ready, **serving().info, "warnings": serving().warnings}
        return web.json(body, status=200 if ready else 503)

    def user_page(suffix: str) -> Callable[[UserAnswer], UserAnswer]:
        """``GET /users/{id}/<suffix>``: answered from the user's row by the worker that owns its
        partition (Faust's table routing forwards the request there); 404 for an unknown user."""

        def register(answer: UserAnswer) -> UserAnswer:
            @app.page(f"/users/{{user_id}}/{suffix}", name=f"user-{suffix}")
            @guarded
            @app.table_route(table=users, match_info="user_id")
            async def page(web: Any, request: Any, user_id: str) -> Any:
                stored = pseudonyms.row_key(user_id.encode())
                row = users.get(stored)
                if not row and pseudonyms.enabled and pseudonyms.is_pseudonym(user_id):  # as the dashboard has it
                    stored, row = user_id.encode(), users.get(user_id.encode())
                if not row:
                    return web.json(NOT_FOUND, status=404)
                return await answer(web, stored.decode(), decode_row(row))

            return answer

        return register

    @user_page("interests")
    async def user_interests(web: Any, user_id: str, state: UserState) -> Any:
        return web.json(
            {
                "user_id": user_id,
                "events": state.length,
                "last_event_ts": state.last_ts,
                "model_version": serving().info["model_version"],
                "interests": ranked(state.detector.previous),
                "profile": ranked(state.detector.long),
                "last_shift": state.shifts[-1] if state.shifts else None,
                "shifts": state.shifts,
            }
        )

    @user_page("timeline")
    async def user_timeline(web: Any, user_id: str, state: UserState) -> Any:
        body = await asyncio.get_running_loop().run_in_executor(None, timeline, serving().checkpoint, user_id, state)
        return web.json(body)

    @app.page("/shifts/recent")
    @guarded
    async def shifts_recent(web: Any, request: Any) -> Any:
        try:
            limit = min(int(request.query.get("limit", 50)), feed.keep)
        except ValueError:
            return web.json({"error": "limit must be an integer"}, status=400)
        return web.json({"shifts": [entry.to_json() for entry in feed.recent(limit)]})

    @app.page("/shifts/stream")
    @guarded
    async def shifts_stream(web: Any, request: Any) -> Any:
        if feed.subscribers >= settings.sse_subscribers:
            return web.json({"error": f"{settings.sse_subscribers} clients follow the stream already"}, status=503)
        response = aiohttp_web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue = feed.subscribe()
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    entry = await asyncio.wait_for(queue.get(), timeout=15)
                    await response.write(f"data: {json.dumps(entry.to_json())}\n\n".encode())
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            feed.unsubscribe(queue)
        return response

    @app.page("/stats")
    async def stats(web: Any, request: Any) -> Any:
        return web.json(snapshot(registry))

    @app.page("/categories")
    async def categories(web: Any, request: Any) -> Any:
        return web.json({"names": names})

    @app.page("/dashboard")
    async def dashboard(web: Any, request: Any) -> Any:
        return web.html(DASHBOARD.read_text())


def token_guard(token: str) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """A decorator for a page ``(web, request, ...)``: 401 unless the request carries
    ``Authorization: Bearer <token>`` (compared in constant time); no check without a token."""
    expected = f"Bearer {token}".encode()

    def guard(page: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if not token:
            return page

        @functools.wraps(page)
        async def checked(web: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
                return web.json(
                    {"error": "a bearer token is required"}, status=401, headers={"WWW-Authenticate": "Bearer"}
                )
            return await page(web, request, *args, **kwargs)

        return checked

    return guard


def ranked(distribution: dict[str, float]) -> list[dict[str, object]]:
    return [
        {"category_id": c, "probability": round(p, 6)}
        for c, p in sorted(distribution.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def timeline(checkpoint: Checkpoint, user_id: str, state: UserState) -> dict[str, object]:
    """The model's distribution after each kept event, recomputed from the first kept one
    (so the earliest points see less history than the worker did)."""
    events = state.events
    sequence = UserSequence(
        user_id,
        tuple(e.item_id for e in events),
        tuple(e.category_id for e in events),
        tuple(e.event_type for e in events),
        tuple(e.ts // 1000 for e in events),
    )
    (distributions,) = interest_along(checkpoint, [sequence], m=20, progress=False)
    peak: dict[str, float] = {}
    for distribution in distributions:
        for category, mass in distribution.items():
            peak[category] = max(peak.get(category, 0.0), mass)
    shown = sorted(peak, key=lambda c: (-peak[c], c))[:TIMELINE_CATEGORIES]
    return {
        "user_id": user_id,
        "first_position": state.first_position,
        "events": [
            {"event_id": e.event_id, "ts": e.ts, "category_id": e.category_id, "event_type": e.event_type}
            for e in events
        ],
        "categories": {c: [round(d.get(c, 0.0), 4) for d in distributions] for c in shown},
        "shifts": state.shifts,
    }


def load_category_names(path: Path) -> dict[str, str]:
    """``id -> name`` from a CSV file of ``id,name`` rows (a first row ``id,name`` is a header).

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
    ...     _ = f.write('id,name\\n4756105,Smartphones\\n982926,"Shoes, running"\\n')
    >>> load_category_names(Path(f.name))
    {'4756105': 'Smartphones', '982926': 'Shoes, running'}
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"SHIFTWATCH_CATEGORY_NAMES={str(path)!r}: {error}") from None
    if rows and [cell.strip().lower() for cell in rows[0]] == ["id", "name"]:
        rows = rows[1:]
    names = {}
    for line, row in enumerate(rows, start=1):
        if len(row) != 2 or not row[0].strip():
            raise ValueError(f"SHIFTWATCH_CATEGORY_NAMES={str(path)!r}: row {line} is not `id,name`: {row!r}")
        names[row[0].strip()] = row[1].strip()
    return names


def snapshot(registry: CollectorRegistry) -> dict[str, object]:
    """Totals and the ingest-to-publish histogram (cumulative counts by upper bound, ``None`` for
    the last, unbounded bucket) for the dashboard:
    one pass over the registry (a collection asks every collector, the lag's included). The
    dashboard takes quantiles over the last minute from the difference of two snapshots."""
    samples = [sample for family in registry.collect() for sample in family.samples]

    def total(name: str, **labels: str) -> float:
        return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    bound = lambda le: None if le == "+Inf" else float(le)  # noqa: E731 - JSON has no infinity
    buckets = [
        [bound(s.labels["le"]), s.value] for s in samples if s.name == "shiftwatch_ingest_to_publish_seconds_bucket"
    ]
    return {
        "time": time.time(),
        "accepted": total("shiftwatch_events_total", outcome="accepted"),
        "updates": total("shiftwatch_updates_published_total"),
        "shifts": total("shiftwatch_shifts_published_total"),
        "dead_letters": total("shiftwatch_dead_letters_total"),
        "latency_buckets": buckets,
    }

"""Memory follows the live state, not the users ever seen: 100,000 distinct users through the
worker's per-user structures, each checked against its bound."""

from __future__ import annotations

import json

from model.online.detector import ShiftDetector
from stream.settings import Settings
from stream.worker.live import ShiftFeed
from stream.worker.pipeline import Admitted, InterestPipeline, serving_scorer
from stream.worker.state import StateCache, UserState
from stream.worker.ttl import ActivityIndex
from tests.stream.helpers import NOW_MS

USERS = 100_000
BOUND = 2_000  # SHIFTWATCH_STATE_CACHE_USERS for the test


def event(u: int) -> tuple[bytes, bytes]:
    user = f"user-{u}"
    value = {
        "event_id": f"e{u}",
        "user_id": user,
        "item_id": str(u % 977),
        "category_id": str(u % 31),
        "event_type": "view",
        "ts": 1_511_600_000_000 + u * 1000,
    }
    return user.encode(), json.dumps(value).encode()


def test_a_hundred_thousand_users_leave_every_per_user_structure_within_its_bound(stream_checkpoint) -> None:
    checkpoint, _ = stream_checkpoint
    settings = Settings(state_cache_users=BOUND, cache_mb=1, publish_threshold=0.01)
    scorer = serving_scorer(checkpoint, settings, ShiftDetector())
    pipeline = InterestPipeline(checkpoint, settings, scorer=scorer)
    states = StateCache(settings.state_cache_users)
    activity = ActivityIndex()
    feed = ShiftFeed()
    batch: list[Admitted] = []
    for u in range(USERS):
        key, value = event(u)
        state = states.get(key) or UserState.empty()
        states.put(key, state)
        outcome = pipeline.admit(value, key, u % 4, u, state, NOW_MS)
        assert isinstance(outcome, Admitted)
        batch.append(outcome)
        activity.touch(key, u % 4, state.last_ts)  # type: ignore[arg-type]
        if len(batch) == 512 or u == USERS - 1:
            scored = pipeline.score(batch)
            feed.publish(scored.shifts, published=0.0)
            batch = []
        if u % 10_000 == 9_999:  # the sweeper: rows more than an hour behind their partition go
            for _, expired in activity.expired(ttl_ms=3_600_000):
                activity.drop(expired)
                states.drop(expired)
                pipeline.forget(expired.decode())
    assert len(states._states) <= BOUND
    assert len(pipeline._last_published) <= BOUND, "the publish threshold's memory is bounded too"
    assert all(v.base is None and v.nbytes <= 4 * v.size for v in pipeline._last_published.values()), (
        "copies, not views"
    )
    assert scorer.engine.cache_bytes <= settings.cache_mb * 2**20 and len(scorer.engine._next_position) == len(
        scorer.engine
    )
    assert len(activity) <= 3_600 * 1.01 + 4, "only rows within the TTL of their partition's latest"
    assert len(feed.recent(10**6)) <= feed.keep

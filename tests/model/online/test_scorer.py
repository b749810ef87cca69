"""A batch's tokens, each event tokenised once, equal every window tokenised on its own."""

from __future__ import annotations

import numpy as np

from model.data.events import StoredEvent
from model.data.vocab import Tokenizer
from model.online.scorer import BatchTokens, UserWindow, encode_events
from tests.stream.helpers import taobao_users


def _alone(tokenizer: Tokenizer, window: UserWindow, recent_events: int) -> tuple[np.ndarray, np.ndarray]:
    """One window's recent tokens (the first with no gap) and its newest event's, tokenised by themselves."""
    first = max(0, window.index + 1 - recent_events)
    kept = window.events[first:]
    previous = [window.events[first - 1].ts if first else window.before_ts, *(e.ts for e in kept[:-1])]
    tokens = encode_events(tokenizer, kept, previous)
    newest = tokens[-1].copy()
    tokens[0, 3] = 0
    return tokens, newest


def test_shared_rows_equal_each_window_tokenised_alone() -> None:
    """Users interleaved, bursts of one user, windows shorter than ``recent_events``, a user
    whose kept events were cut (a later first position), and one who comes back at a lower
    position (after a reorder): every window's tokens, categories and newest event as alone."""
    log = taobao_users(4)
    tokenizer = Tokenizer.build(log.users, item_min_count=2)
    stored = {}
    for u in log.users:
        assert u.timestamps is not None
        events = zip(u.items, u.categories, u.behaviors, u.timestamps, strict=True)
        stored[u.user_id] = [StoredEvent(f"{u.user_id}-{i}", *e[:3], 1000 * e[3]) for i, e in enumerate(events)]
    a, b, c, d = (u.user_id for u in log.users)

    def window(user: str, position: int, first_position: int = 0) -> UserWindow:
        events = stored[user][first_position : position + 1]
        return UserWindow(
            user, tuple(events), first_position, stored[user][first_position - 1].ts if first_position else None
        )

    windows = [
        window(a, 0), window(b, 5), window(a, 1), window(a, 2), window(b, 6), window(c, 30, 25),
        window(a, 3), window(c, 31, 26), window(a, 8), window(b, 7), window(d, 12), window(d, 13), window(d, 4), window(d, 5),
    ]  # fmt: skip
    tokens = BatchTokens.of(tokenizer, windows, recent_events=4)
    recent = tokens.recent
    assert len(recent.tokens) < int(recent.lengths.sum()) + len(windows), "windows share rows"
    for row, (w, start, length) in enumerate(zip(windows, recent.starts, recent.lengths, strict=True)):
        alone, newest = _alone(tokenizer, w, recent_events=4)
        rows = recent.token_rows[start : start + length]
        assert np.array_equal(recent.tokens[rows], alone), row
        assert np.array_equal(tokens.newest[row], newest), row
        first = max(0, w.index + 1 - 4)
        assert [tokens.recent_categories[r] for r in rows] == [e.category_id for e in w.events[first:]], row

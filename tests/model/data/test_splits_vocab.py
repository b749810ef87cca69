from __future__ import annotations

import numpy as np
import pytest

from model.data.loaders import DirtyReport, EventLog, UserSequence
from model.data.splits import TEST, TRAIN, VALIDATION, SplitSpec, before_test, parse_time
from model.data.vocab import OOV_ID, TimeGapBuckets, Tokenizer, Vocabulary


def user(n: int, timestamps: list[int] | None) -> UserSequence:
    return UserSequence(
        "u",
        tuple(f"i{k}" for k in range(n)),
        tuple(f"c{k % 3}" for k in range(n)),
        ("view",) * n,
        None if timestamps is None else tuple(timestamps),
    )


def test_time_split_phases_follow_the_cut_points() -> None:
    spec = SplitSpec("time", t1=100, t2=200)
    assert spec.phases(user(5, [10, 99, 100, 199, 200])).tolist() == [TRAIN, TRAIN, VALIDATION, VALIDATION, TEST]


def test_leave_one_out_phases() -> None:
    spec = SplitSpec("leave_one_out")
    assert spec.phases(user(4, None)).tolist() == [TRAIN, TRAIN, VALIDATION, TEST]
    assert spec.phases(user(2, None)).tolist() == [TRAIN, TEST]


def test_split_for_a_log_defaults_and_refusals() -> None:
    timed = EventLog("t", "taobao", (user(10, list(range(0, 100, 10))),), DirtyReport())
    spec = SplitSpec.for_log(timed)
    assert (spec.kind, spec.t1, spec.t2) == ("time", 63, 76)
    untimed = EventLog("s", "s3rec", (user(5, None),), DirtyReport())
    assert SplitSpec.for_log(untimed).kind == "leave_one_out"
    with pytest.raises(ValueError, match="leave-one-out"):
        SplitSpec.for_log(untimed, t1=5)
    with pytest.raises(ValueError, match="t1 < t2"):
        SplitSpec("time", 5, 5)


def test_vocabulary_is_built_only_from_events_before_the_test_phase() -> None:
    log = EventLog("t", "taobao", (user(5, [10, 20, 30, 40, 50]),), DirtyReport())
    spec = SplitSpec("time", t1=30, t2=40)
    visible = before_test(log, spec)
    assert visible[0].items == ("i0", "i1", "i2")
    tokenizer = Tokenizer.build(visible, item_min_count=1)
    assert "i3" not in tokenizer.items and tokenizer.items.encode("i4") == OOV_ID
    encoded = tokenizer.encode(log.users[0])
    assert encoded.gaps.tolist() == [0, 4, 4, 4, 4]  # unknown first gap, then log2(11) -> bucket 4
    assert Tokenizer.from_dict(tokenizer.to_dict()).items.tokens == tokenizer.items.tokens


def test_vocabulary_rejects_malformed_token_lists() -> None:
    with pytest.raises(ValueError):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError):
        Vocabulary(["<pad>", "<oov>", "a", "a"])


def test_parse_time_needs_an_offset() -> None:
    assert parse_time("2017-12-02T00:00:00+08:00") == 1512144000
    with pytest.raises(ValueError, match="UTC offset"):
        parse_time("2017-12-02T00:00:00")


def test_gap_buckets_of_an_array_equal_the_log2_rule() -> None:
    import math

    buckets = TimeGapBuckets(24)
    gaps = np.concatenate([np.arange(-3, 5000), 2 ** np.arange(40), 2 ** np.arange(40) - 1, 2 ** np.arange(1, 40) - 2])
    expected = [min(1 + int(math.log2(1 + max(int(g), 0))), 23) for g in gaps]
    assert buckets.buckets(gaps, np.ones(len(gaps), dtype=bool)).tolist() == expected
    assert buckets.buckets(gaps, np.zeros(len(gaps), dtype=bool)).tolist() == [0] * len(gaps)

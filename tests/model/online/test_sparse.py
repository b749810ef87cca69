"""The compiled sparse-distribution kernels give the same doubles, in the same order, as the
plain Python they replaced (kept here as the oracle), on every kind of input: overlapping and
disjoint keys, ties, empty and over-long distributions, keys that are equal but not the same
object (a state read back from a row)."""

from __future__ import annotations

import json
import math
from operator import itemgetter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.online.sparse import blend, gains, jensen_shannon, strongest


def strongest_reference(p: dict[str, float], m: int) -> dict[str, float]:
    if len(p) <= m:
        return dict(p)
    return dict(sorted(p.items(), key=itemgetter(1), reverse=True)[:m])


def blend_reference(old: dict[str, float], new: dict[str, float], weight: float, m: int) -> dict[str, float]:
    keep = 1.0 - weight
    mixed = {category: keep * mass for category, mass in old.items()}
    for category, mass in new.items():
        mixed[category] = mixed.get(category, 0.0) + weight * mass
    return strongest_reference(mixed, m)


def jensen_shannon_reference(p: dict[str, float], q: dict[str, float]) -> float:
    def rest(d: dict[str, float]) -> float:
        return max(0.0, 1.0 - math.fsum(d.values()))

    total = 0.0
    for a, b in [(rest(p), rest(q))] + [(a, q.get(c, 0.0)) for c, a in p.items()]:
        if b == 0.0:
            total += a
        elif a == 0.0:
            total += b
        else:
            mean = 0.5 * (a + b)
            total += a * math.log2(a / mean)
            total += b * math.log2(b / mean)
    for c, b in q.items():
        if c not in p:
            total += b
    return min(1.0, max(0.0, 0.5 * total))


def gains_reference(previous: dict[str, float], distribution: dict[str, float], n: int) -> dict[str, float]:
    best = sorted([(mass - previous.get(c, 0.0), c) for c, mass in distribution.items()], reverse=True)[:n]
    return {c: gain for gain, c in best if gain > 0}


CATEGORIES = st.sampled_from([f"c{i}" for i in range(30)])
# Masses from a few values so that ties are common, and arbitrary ones.
MASS = st.one_of(st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.5]), st.floats(0.0, 1.0, allow_nan=False))


@st.composite
def distributions(draw: st.DrawFn) -> dict[str, float]:
    entries = draw(st.dictionaries(CATEGORIES, MASS, max_size=25))
    total = sum(entries.values())
    return {c: m / total for c, m in entries.items()} if total > 1 else entries


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal keys, in the same order, and the same doubles (a negative zero is not zero)."""
    return [(c, x.hex()) for c, x in a.items()] == [(c, float(x).hex()) for c, x in b.items()]


@settings(max_examples=400, deadline=None)
@given(distributions(), distributions(), st.floats(0.0, 1.0), st.integers(1, 30))
def test_blend_and_strongest_equal_the_reference(
    old: dict[str, float], new: dict[str, float], weight: float, m: int
) -> None:
    assert same(blend(old, new, weight, m), blend_reference(old, new, weight, m))
    assert same(strongest(old, m), strongest_reference(old, m))


@settings(max_examples=400, deadline=None)
@given(distributions(), distributions())
def test_jensen_shannon_equals_the_reference(p: dict[str, float], q: dict[str, float]) -> None:
    assert jensen_shannon(p, q) == jensen_shannon_reference(p, q)
    assert jensen_shannon(p, p) == jensen_shannon_reference(p, p)


@settings(max_examples=400, deadline=None)
@given(distributions(), distributions(), st.integers(1, 8))
def test_gains_equal_the_reference(previous: dict[str, float], distribution: dict[str, float], n: int) -> None:
    assert same(gains(previous, distribution, n), gains_reference(previous, distribution, n))


def test_keys_are_matched_by_equality_not_identity() -> None:
    p = {"shoes": 0.5, "bags": 0.25}
    q = json.loads(json.dumps({"bags": 0.5, "shoes": 0.25}))  # equal strings, other objects
    assert jensen_shannon(p, q) == jensen_shannon_reference(p, q)
    assert same(blend(q, p, 0.5, 2), blend_reference(q, p, 0.5, 2))
    assert same(gains(q, p, 3), {"shoes": 0.25})


def test_ties_keep_the_order_sorted_gives() -> None:
    assert list(strongest({"a": 0.25, "b": 0.5, "c": 0.25, "d": 0.25}, 3)) == ["b", "a", "c"]
    assert list(gains({}, {"a": 0.25, "c": 0.25, "b": 0.25}, 2)) == ["c", "b"]  # tie: the larger id first


def test_wrong_input_is_an_error_not_a_crash() -> None:
    with pytest.raises(TypeError):
        blend(None, {}, 0.5, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        jensen_shannon({"a": "x"}, {})  # type: ignore[dict-item]

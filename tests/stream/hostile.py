"""Hostile input messages by class, as Hypothesis strategies: the fuzzing corpus of the unit and
the broker tests.

Each class aims at one limit of :mod:`stream.worker.validation` from both sides: nesting around
``MAX_DEPTH`` and far past Python's recursion limit, number literals around
``MAX_NUMBER_CHARS`` and thousands of digits long, every JSON literal (and the non-JSON
``NaN``/``Infinity``), invalid UTF-8 and lone surrogates in every field, sizes around
``max_event_bytes`` and the dead-letter copy, and event-shaped objects with each field
missing, null, mistyped, empty, too long or out of range.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stream.worker.validation import MAX_DEPTH, MAX_NUMBER_CHARS
from topics.records import DEAD_LETTER_COPY_BYTES

FIELDS = ("event_id", "user_id", "item_id", "category_id", "event_type", "ts")
MAX_EVENT_BYTES = 16_384  # the default of SHIFTWATCH_MAX_EVENT_BYTES
USERS = [f"fuzz-user-{u}" for u in range(50)]
LITERALS = [
    b"true",
    b"false",
    b"null",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-0",
    b"0.0",
    b"1E400",
    b"-1e-400",
]


def _digits(n: int) -> bytes:
    return b"9" * n


numbers = st.one_of(
    st.integers().map(lambda i: str(i).encode()),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: json.dumps(f).encode()),
    st.integers(MAX_NUMBER_CHARS - 2, MAX_NUMBER_CHARS + 2).map(_digits),
    st.integers(1, 20_000).map(_digits),
    st.builds(lambda m, e: b"1." + _digits(m) + b"e" + str(e).encode(), st.integers(0, 40), st.integers(-9999, 9999)),
    st.sampled_from(LITERALS),
)
bad_text = st.one_of(
    st.sampled_from(
        [
            b'"\\ud800"',
            b'"\\udfff x"',
            b'"a\\ud83d"',
            b'"\\u0000"',
            b'"\xc3\x28"',
            b'"\xed\xa0\x80"',
            b'"\xf0\x28\x8c\xbc"',
            b'"\xc0\xaf"',
            b'"\xff"',
            b'"\\x41"',
            b'"\\u12"',
            b'"unterminated',
        ]
    ),
    st.binary(min_size=1, max_size=12).map(lambda b: b'"' + b.replace(b'"', b"") + b'"'),
)
json_text = st.text(max_size=20).map(lambda s: json.dumps(s).encode())
scalars = st.one_of(numbers, json_text, bad_text, st.sampled_from(LITERALS))


def _nest(depth: int, kind: str, core: bytes) -> bytes:
    opening, closing = (b'{"a":', b"}") if kind == "object" else (b"[", b"]")
    return opening * depth + core + closing * depth


nested = st.builds(
    _nest,
    st.one_of(
        st.integers(MAX_DEPTH - 2, MAX_DEPTH + 2), st.integers(0, 30), st.integers(900, 1100), st.integers(5000, 8000)
    ),
    st.sampled_from(["array", "object"]),
    scalars,
)
unbalanced = st.builds(
    lambda n, c: c * n, st.integers(1, 20_000), st.sampled_from([b"[", b"{", b"]", b'{"a":[', b"[{"])
)


def _event(fields: dict[str, bytes], pad: int) -> bytes:
    body = b",".join(json.dumps(name).encode() + b":" + value for name, value in fields.items())
    padding = b',"padding":"' + b"x" * pad + b'"' if pad else b""
    return b"{" + body + padding + b"}"


field_values = st.one_of(
    st.sampled_from([b'"e1"', b'""', b'"  "', b"null", b"true", b"[]", b"{}", b"3", b'"view"', b'"pv"', b'" CART "']),
    st.integers(0, 400).map(lambda n: json.dumps("i" * n).encode()),  # around max_string_length
    scalars,
    nested,
)
timestamps = st.one_of(
    st.integers(1_500_000_000, 1_800_000_000).map(lambda s: str(s).encode()),
    st.integers(1_500_000_000_000, 1_800_000_000_000).map(lambda s: str(s).encode()),
    st.sampled_from(
        [
            b'"2017-11-25T10:00:00+08:00"',
            b'"2017-11-25T10:00:00"',
            b'"0001-01-01T00:00:00+23:59"',
            b'"9999-12-31T23:59:59-23:59"',
            b'"yesterday"',
            b"1e308",
            b"-1e308",
            b"99999999999999999999",
            b"1511658000.5",
            b'"' + b"2" * 70 + b'"',
        ]
    ),
    numbers,
)
event_shaped = st.builds(
    _event,
    st.fixed_dictionaries(
        {},
        optional={name: (timestamps if name == "ts" else field_values) for name in FIELDS}
        | {"extra": st.one_of(scalars, nested)},
    ),
    st.one_of(
        st.just(0),
        st.integers(MAX_EVENT_BYTES - 300, MAX_EVENT_BYTES + 300),
        st.integers(0, DEAD_LETTER_COPY_BYTES + 500),
    ),
)


def _valid(user: str, item: int, category: str, behaviour: str, seconds: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"{user}-{item}-{seconds}",
            "user_id": user,
            "item_id": item,
            "category_id": category,
            "event_type": behaviour,
            "ts": seconds * 1000,
        }
    ).encode()


valid = st.builds(
    _valid,
    st.sampled_from(USERS),
    st.integers(1, 5_000_000),
    st.sampled_from(["4756105", "4145813", "2355072", "3607361", "982926", "999999999"]),
    st.sampled_from(["view", "pv", "cart", "fav", "buy"]),
    st.integers(1_511_500_000, 1_512_300_000),
)


def _sized(seed: bytes, size: int) -> bytes:
    return (seed * (size // len(seed) + 1))[:size]


sizes = st.one_of(st.integers(MAX_EVENT_BYTES - 4, MAX_EVENT_BYTES + 4), st.integers(0, 2 * DEAD_LETTER_COPY_BYTES))
raw_bytes = st.one_of(st.binary(max_size=64), st.builds(_sized, st.binary(min_size=1, max_size=16), sizes))
messages = st.one_of(valid, event_shaped, nested, unbalanced, scalars, raw_bytes)
"""Any message, as bytes: every class above."""


def corpus(n: int) -> list[bytes]:
    """``n`` hostile messages of every class, drawn by Hypothesis (derandomised: the same corpus
    on every run)."""
    drawn: list[bytes] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    @given(messages)
    def draw(raw: bytes) -> None:
        drawn.append(raw)

    draw()
    return drawn

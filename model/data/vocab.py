"""Vocabularies and the tokenizer that turns raw events into model ids.

Id 0 is padding and id 1 is out-of-vocabulary in every vocabulary, so an unseen item or
category is always representable.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.data.events import EVENT_TYPES
from model.data.loaders import UserSequence

PAD_ID = 0
OOV_ID = 1
PAD_TOKEN = "<pad>"
OOV_TOKEN = "<oov>"


class Vocabulary:
    """A frozen token <-> id map with padding and out-of-vocabulary ids.

    >>> vocab = Vocabulary.build(["a", "b", "a", "c", "a", "b"], min_count=2)
    >>> vocab.tokens
    ('<pad>', '<oov>', 'a', 'b')
    >>> vocab.encode("a"), vocab.encode("c"), len(vocab)
    (2, 1, 4)
    """

    def __init__(self, tokens: Sequence[str]):
        if tuple(tokens[:2]) != (PAD_TOKEN, OOV_TOKEN):
            raise ValueError("a vocabulary starts with the padding and OOV tokens")
        self.tokens: tuple[str, ...] = tuple(tokens)
        self._ids = {token: i for i, token in enumerate(self.tokens)}
        if len(self._ids) != len(self.tokens):
            raise ValueError("vocabulary tokens must be unique")

    @classmethod
    def build(cls, observed: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Keep tokens seen at least ``min_count`` times, most frequent first (ties by token)."""
        counts = Counter(observed)
        kept = sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
        return cls([PAD_TOKEN, OOV_TOKEN, *kept])

    def encode(self, token: str) -> int:
        return self._ids.get(token, OOV_ID)

    @functools.cached_property
    def token_array(self) -> np.ndarray:
        """The tokens as an object array, to decode many ids at once."""
        return np.asarray(self.tokens, dtype=object)

    def encode_many(self, tokens: Iterable[str]) -> np.ndarray:
        """:meth:`encode` of each token, as an int64 array."""
        return np.fromiter(map(self._ids.get, tokens, itertools.repeat(OOV_ID)), dtype=np.int64)

    def decode(self, token_id: int) -> str:
        return self.tokens[token_id]

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._ids


@dataclass(frozen=True)
class TimeGapBuckets:
    """Bucket the gap to a user's previous event on a log2 scale.

    Bucket 0 means unknown (a user's first event, or a log without timestamps);
    bucket ``1 + floor(log2(1 + gap_seconds))`` otherwise, capped at ``n_buckets - 1``.

    >>> buckets = TimeGapBuckets(n_buckets=24)
    >>> gaps = np.array([0, 0, 1, 3, 60, 86_400, 10**9, -5])
    >>> buckets.buckets(gaps, known=np.array([False] + [True] * 7)).tolist()
    [0, 1, 2, 3, 6, 17, 23, 1]
    """

    n_buckets: int = 24

    def buckets(self, gap_seconds: np.ndarray, known: np.ndarray) -> np.ndarray:
        """The bucket of each gap (``known`` false: no gap, bucket 0), as an int64 array.
        ``floor(log2(n))`` is read exactly off the float's exponent."""
        _, exponent = np.frexp(1.0 + np.maximum(gap_seconds, 0))
        return np.where(known, np.minimum(exponent.astype(np.int64), self.n_buckets - 1), 0)


@dataclass(frozen=True, slots=True)
class TokenSequence:
    """A user's events as model ids: four aligned int64 arrays."""

    items: np.ndarray
    categories: np.ndarray
    behaviors: np.ndarray
    gaps: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    def slice(self, start: int, stop: int) -> TokenSequence:
        return TokenSequence(
            self.items[start:stop], self.categories[start:stop], self.behaviors[start:stop], self.gaps[start:stop]
        )


class Tokenizer:
    """Items, categories, behaviours and time gaps -> ids, built from training data."""

    def __init__(
        self,
        items: Vocabulary,
        categories: Vocabulary,
        behaviors: Vocabulary,
        gaps: TimeGapBuckets,
    ):
        self.items = items
        self.categories = categories
        self.behaviors = behaviors
        self.gaps = gaps

    @classmethod
    def build(
        cls,
        users: Iterable[UserSequence],
        item_min_count: int = 2,
        category_min_count: int = 1,
        n_gap_buckets: int = 24,
    ) -> Tokenizer:
        users = list(users)
        return cls(
            items=Vocabulary.build((i for u in users for i in u.items), item_min_count),
            categories=Vocabulary.build((c for u in users for c in u.categories), category_min_count),
            behaviors=Vocabulary([PAD_TOKEN, OOV_TOKEN, *EVENT_TYPES]),
            gaps=TimeGapBuckets(n_gap_buckets),
        )

    def encode(self, user: UserSequence) -> TokenSequence:
        n = len(user)
        if user.timestamps is None:
            gaps = np.zeros(n, dtype=np.int64)
        else:
            ts = np.asarray(user.timestamps, dtype=np.int64)
            gaps = self.gaps.buckets(np.diff(ts, prepend=ts[:1]), np.arange(n) > 0)
        return TokenSequence(
            self.items.encode_many(user.items),
            self.categories.encode_many(user.categories),
            self.behaviors.encode_many(user.behaviors),
            gaps,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "items": list(self.items.tokens),
            "categories": list(self.categories.tokens),
            "behaviors": list(self.behaviors.tokens),
            "n_gap_buckets": self.gaps.n_buckets,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        return cls(
            items=Vocabulary(data["items"]),
            categories=Vocabulary(data["categories"]),
            behaviors=Vocabulary(data["behaviors"]),
            gaps=TimeGapBuckets(int(data["n_gap_buckets"])),
        )

"""The recent interest: the model's reading of a user's last few events alone.

The output equals a full forward over each window (:meth:`InterestTransformer.encode` and
the interest mixture at the window's last event, the first event with no known time gap),
computed with only the work that output depends on:

* windows of equal length are batched together, so no padded position is computed;
* an event in several windows of a batch (a user's burst: each window is the last few
  events) is embedded and projected to the first block's queries, keys and values once
  (:attr:`TokenWindows.rows`); what comes after attention depends on the window;
* every block but the last runs over all the window's events (the last block reads their
  keys and values); the last block's attention and feed-forward, and both heads, run at
  the window's last event only.

There is no cache from one event to the next, and there cannot be one that is exact: the
next event's window drops the oldest event, which changes the state of every event after
it (attention renormalises without it, through the layer's nonlinearity) and gives the new
oldest event no time gap. So each event costs one short forward over ``recent_events``
rows of the first block, and one row of the rest.

>>> from model.net.config import ModelConfig
>>> from model.net.transformer import InterestTransformer, TokenBatch
>>> _ = torch.manual_seed(0)
>>> model = InterestTransformer(ModelConfig(n_items=20, n_categories=6, d_model=16, n_heads=2, d_ff=32, window=4, copy_window=4)).eval()
>>> windows = TokenWindows.of([np.array([[5, 2, 2, 0], [6, 3, 2, 4], [7, 2, 3, 1]]), np.array([[9, 4, 2, 0]])])
>>> out, copied = window_interest(model, windows, k=3)
>>> ids = torch.tensor([[5, 6, 7]])
>>> batch = TokenBatch(ids, torch.tensor([[2, 3, 2]]), torch.tensor([[2, 2, 3]]), torch.tensor([[0, 4, 1]]), torch.zeros(1, dtype=torch.long))
>>> with torch.inference_mode():
...     full = model.category_probs(model.encode(batch))[0, -1]
>>> bool(torch.allclose(out.probs[0], full, atol=1e-6)), tuple(copied.shape)
(True, (2, 3))
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model.net.transformer import Block, InterestTransformer, apply_rotary, band_mask
from model.online.readout import Readout, readout


@dataclass(frozen=True, slots=True)
class TokenWindows:
    """Token windows, flat: window ``w`` is rows ``starts[w] : starts[w] + lengths[w]`` of
    ``tokens[rows]`` ``(N, 4)`` (item, category, behaviour, gap ids), in event order.
    ``rows`` (``None``: every row of ``tokens`` in order) lets windows share a token row;
    ``positions`` is then each token row's place in its user's stream (any origin: attention
    reads only differences of positions), so that a shared row is rotated once.

    >>> shared = TokenWindows(np.array([[5, 2, 2, 0], [6, 3, 2, 4], [6, 3, 2, 0]]), np.array([2, 1]), np.array([0, 1, 2]), np.array([7, 8, 8]))
    >>> shared.tokens[shared.token_rows, 3].tolist(), shared.starts.tolist(), shared.token_positions.tolist()
    ([0, 4, 0], [0, 2], [7, 8, 8])
    >>> TokenWindows.of([np.zeros((2, 4)), np.zeros((1, 4))]).token_positions.tolist()
    [0, 1, 0]
    """

    tokens: np.ndarray
    lengths: np.ndarray
    rows: np.ndarray | None = None
    positions: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.rows is None) != (self.positions is None):
            raise ValueError("shared rows need their positions, and positions are only for shared rows")

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.lengths) - self.lengths

    @property
    def token_rows(self) -> np.ndarray:
        """The row of ``tokens`` of each window row, ``(N,)``."""
        return np.arange(int(self.lengths.sum())) if self.rows is None else self.rows

    @property
    def token_positions(self) -> np.ndarray:
        """The rotary position of each row of ``tokens``, ``(len(tokens),)``: ``positions``, or
        each row's place in its window."""
        if self.positions is not None:
            return self.positions
        return np.arange(len(self.tokens)) - np.repeat(self.starts, self.lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def of(cls, windows: Sequence[np.ndarray]) -> TokenWindows:
        """From one ``(length, 4)`` array per window."""
        lengths = np.asarray([len(w) for w in windows], dtype=np.int64)
        tokens = np.concatenate(windows) if windows else np.zeros((0, 4), dtype=np.int64)
        return cls(tokens.astype(np.int64, copy=False), lengths)


@torch.inference_mode()
def window_interest(model: InterestTransformer, windows: TokenWindows, k: int) -> tuple[Readout, Tensor]:
    """The interest distribution after each window's last event, reading that window only
    (its ``k`` most probable ids, padding and OOV included), and the mass it copies from each
    of the window's events, ``(B, longest window)`` (zero past a window's end).

    The windows' events are packed in order of window length, so that every projection and
    feed-forward runs on real events, each in one call; attention runs per group of windows
    of one length. The embeddings and the first block's projections run once per row of
    ``windows.tokens``.
    """
    config = model.config
    n = len(windows)
    if n == 0:
        empty = torch.empty((0, config.n_categories))
        return Readout(empty, np.zeros((0, k), dtype=np.int64), np.zeros(0)), torch.empty((0, 0))
    order = np.argsort(windows.lengths, kind="stable")
    lengths = windows.lengths[order]
    packed_starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    steps_np = np.arange(len(packed_starts)) - packed_starts  # each event's place in its window
    rows = torch.from_numpy(windows.token_rows[np.repeat(windows.starts[order], lengths) + steps_np])
    distinct = torch.from_numpy(windows.tokens)
    tokens = distinct[rows]
    steps = torch.from_numpy(steps_np)
    groups = equal_runs(lengths)
    distinct_x = model.embed(distinct[:, 0], distinct[:, 1], distinct[:, 2], distinct[:, 3])
    x = distinct_x[rows]
    distinct_cos, distinct_sin = (t[:, None, None] for t in model.rotary(torch.from_numpy(windows.token_positions)))
    cos, sin = distinct_cos[rows], distinct_sin[rows]  # (rows, 1, 1, head_dim): over (query, key) and heads
    masks = {length: band_mask(length, config.window) for length in np.unique(lengths).tolist()}
    blocks = cast(Sequence[Block], model.blocks)
    h = x
    for layer, block in enumerate(blocks[:-1]):
        q, key, value = (
            _projected(block, distinct_x, distinct_cos, distinct_sin, rows=rows)
            if layer == 0
            else _projected(block, h, cos, sin)
        )
        attended = torch.empty_like(q)
        for w0, w1, r0, r1 in groups:
            m, length = w1 - w0, (r1 - r0) // (w1 - w0)
            gq, gk, gv = (t[r0:r1].view(m, length, *t.shape[1:]).transpose(1, 2) for t in (q, key, value))
            out = _attend(gq, gk, gv, masks[length])
            attended[r0:r1] = out.transpose(1, 2).flatten(0, 1)
        h = block.feed_forward(h + block.attn.out(attended.flatten(1)))
    last = blocks[-1]
    ends = torch.from_numpy(np.cumsum(lengths) - 1)  # each window's last event
    q, key, value = _projected(last, h, cos, sin, queries=ends)
    attended = torch.empty_like(q)
    for w0, w1, r0, r1 in groups:
        m, length = w1 - w0, (r1 - r0) // (w1 - w0)
        seen = min(length, config.window)  # the keys the last event's query sees
        keys, values = (t[r0:r1].view(m, length, *t.shape[1:])[:, -seen:].transpose(1, 2) for t in (key, value))
        attended[w0:w1] = F.scaled_dot_product_attention(q[w0:w1, :, None], keys, values)[:, :, 0]
    hidden = model.final_norm(last.feed_forward(h[ends] + last.attn.out(attended.flatten(1))))

    # The copy head's candidates in a table as wide as the longest window (at most
    # recent_events), the missing ones masked: a few pointer products, not a layer's work.
    width = int(lengths[-1])
    copy_keys = model.copy_key(distinct_x)[rows]
    padded = torch.zeros((n, width, config.d_model))
    categories = torch.zeros((n, width), dtype=torch.long)
    offsets = torch.full((n, width), -1, dtype=torch.long)  # -1: no event, masked
    window_rows = torch.from_numpy(np.repeat(np.arange(n), lengths))
    padded[window_rows, steps] = copy_keys
    categories[window_rows, steps] = tokens[:, 1]
    offsets[window_rows, steps] = torch.from_numpy(np.repeat(lengths - 1, lengths)) - steps
    gate = model.copy_gate_probs(hidden)
    weights = model.copied(model.copy_query(hidden)[:, None], 1 - gate[:, None], padded, offsets[:, None])[:, 0]
    back = torch.from_numpy(np.argsort(order, kind="stable"))
    weights = weights[back]
    return readout(model, hidden[back], gate[back], categories[back], weights, k, skip=0, with_entropy=False), weights


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Softmax attention of ``q`` over ``k``/``v`` ``(B, heads, L, head_dim)`` where ``mask``
    allows it: for windows this short, explicit matrix products beat the fused kernel's per-tile cost."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    return scores.masked_fill_(~mask, float("-inf")).softmax(dim=-1) @ v


def _projected(
    block: Block, h: Tensor, cos: Tensor, sin: Tensor, queries: Tensor | None = None, rows: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """A block's rotated queries (of the rows ``queries``, or all), keys and values of rows
    ``h (N, d)`` (or of ``h[rows]``, projected and rotated before they are gathered), each
    ``(rows, heads, head_dim)``; ``cos``/``sin`` ``(N, 1, 1, head_dim)`` are the rows' rotations."""
    attention = block.attn
    y = block.ln_attn(h)
    shape = (attention.n_heads, attention.head_dim)
    d = y.shape[-1]
    weight, bias = attention.qkv.weight, attention.qkv.bias
    if queries is None:
        qkv = attention.qkv(y).view(len(y), 3, *shape)
        rotated = apply_rotary(qkv[:, :2], cos, sin)  # queries and keys in one pass
        if rows is not None:
            rotated, qkv = rotated[rows], qkv[rows]
        return rotated[:, 0], rotated[:, 1], qkv[:, 2]
    q = F.linear(y[queries], weight[:d], bias[:d]).view(len(queries), *shape)
    kv = F.linear(y, weight[d:], bias[d:]).view(len(y), 2, *shape)
    return apply_rotary(q, cos[queries, 0], sin[queries, 0]), apply_rotary(kv[:, 0], cos[:, 0], sin[:, 0]), kv[:, 1]


def equal_runs(lengths: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(first, end, first row, end row)`` of each run of equal ``lengths``, rows counted as
    ``lengths`` of them per entry: the groups a packed batch of windows is attended in.

    >>> equal_runs(np.array([1, 1, 3]))
    [(0, 2, 0, 2), (2, 3, 2, 5)]
    """
    ends = np.flatnonzero(np.diff(lengths)) + 1
    bounds = np.concatenate([[0], ends, [len(lengths)]])
    rows = np.concatenate([[0], np.cumsum(lengths)])
    return [(int(a), int(b), int(rows[a]), int(rows[b])) for a, b in itertools.pairwise(bounds.tolist())]

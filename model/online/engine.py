"""Incremental inference: each new event costs one cached step, not a recompute of the history.

The interest model attends over a sliding window of ``W`` events in every layer, and its
keys carry rotary encodings of *absolute* positions. So for each user the engine keeps

* per layer, the rotated keys and the values of the last ``W`` events, in a ring buffer
  (slot ``position % W``; attention does not care about slot order, only about which
  slots hold events inside the window), and
* the pointer keys and category ids of the last ``copy_window`` events, for the copy head,

and a new event needs one row of every layer, attending over at most ``W`` cached rows.
Caches live in preallocated slabs; users are evicted least-recently-used under a byte
budget, and a user who is not cached is rebuilt exactly from their last
``receptive_field - 1`` events, read from the :class:`HistorySource` the caller passes
with each step (the engine holds no reference to its caller's state).

>>> import numpy as np
>>> from model.net.config import ModelConfig
>>> from model.net.transformer import InterestTransformer
>>> _ = torch.manual_seed(0)
>>> config = ModelConfig(n_items=20, n_categories=6, d_model=16, n_heads=2, d_ff=32, window=4, copy_window=4)
>>> engine = IncrementalEngine(InterestTransformer(config), "v1", top_k=3)
>>> result = engine.step([UserEvent("alice", 0, EventTokens(item=5, category=2, behavior=2, gap=0))])
>>> result.category_probs.shape, round(float(result.category_probs.sum()), 5), result.model_version
((1, 6), 1.0, 'v1')
>>> engine.stats.first_events, len(engine)
(1, 1)
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
import torch

from model.data.vocab import OOV_ID, TokenSequence
from model.net.batching import pad_sequences
from model.net.transformer import NEG_INF, Block, InterestTransformer, apply_rotary
from model.online.readout import readout

NO_EVENT = -(1 << 40)  # position of an empty cache slot: never inside any window
DEFAULT_BUDGET_BYTES = 256 * 1024 * 1024
MAX_CHUNK = 32


@dataclass(frozen=True, slots=True)
class EventTokens:
    """One event as model ids (see :class:`model.data.vocab.Tokenizer`)."""

    item: int
    category: int
    behavior: int
    gap: int


@dataclass(frozen=True, slots=True)
class UserEvent:
    """A user's new event and its absolute position in their stream (0 for the first)."""

    user: str
    position: int
    tokens: EventTokens


class HistorySource(Protocol):
    """Where the engine reads a user's earlier events when it must rebuild their cache."""

    def events_before(self, user: str, position: int, count: int) -> TokenSequence:
        """The user's events at positions ``max(0, position - count) .. position - 1``."""
        ...


class InMemoryHistory:
    """A :class:`HistorySource` over dictionaries of whole token sequences.

    >>> history = InMemoryHistory({"u": TokenSequence(*(np.arange(5),) * 4)})
    >>> history.events_before("u", 4, 2).items.tolist(), len(history.events_before("v", 3, 2))
    ([2, 3], 0)
    """

    def __init__(self, sequences: dict[str, TokenSequence] | None = None):
        self.sequences = dict(sequences or {})

    def events_before(self, user: str, position: int, count: int) -> TokenSequence:
        sequence = self.sequences.get(user)
        if sequence is None:
            empty = np.zeros(0, dtype=np.int64)
            return TokenSequence(empty, empty, empty, empty)
        return sequence.slice(max(0, position - count), position)


NO_HISTORY = InMemoryHistory()
"""Users with no earlier events: every one not cached starts afresh."""


@dataclass(frozen=True)
class StepResult:
    """The engine's outputs for a batch of events, in input order.

    ``category_probs`` ``(B, n_categories)``: each user's interest distribution after
    the event. ``top_items`` / ``top_item_scores`` ``(B, k)``: best next items (never
    padding or OOV). ``copy_weights`` ``(B, copy_window)``: the mass the distribution
    copies from the user's event at ``copy_positions`` (``-1``: no event), whose category id
    is ``copy_categories``: the evidence of what moved it. ``best_categories`` ``(B, k)``: the
    ``top_categories`` most probable category ids (never padding or OOV), most probable first;
    ``entropy`` ``(B,)``: of ``category_probs``, in nats, when the engine was asked for it.
    ``rebuilt``: whether the user's cache was rebuilt from history first.
    """

    users: tuple[str, ...]
    positions: np.ndarray
    category_probs: np.ndarray
    top_items: np.ndarray
    top_item_scores: np.ndarray
    copy_weights: np.ndarray
    copy_positions: np.ndarray
    copy_categories: np.ndarray
    best_categories: np.ndarray
    rebuilt: np.ndarray
    model_version: str
    entropy: np.ndarray | None = None


@dataclass
class EngineStats:
    """Counters since the engine started: hits, rebuilds, first events, evictions, swaps."""

    hits: int = 0
    rebuilds: int = 0
    first_events: int = 0
    evictions: int = 0
    swaps: int = 0


@dataclass
class _Slabs:
    """Cache tensors for ``capacity`` users; slot ``s`` of every tensor belongs to one user."""

    keys: torch.Tensor  # (layers, capacity, heads, W, head_dim)
    values: torch.Tensor
    positions: torch.Tensor  # (capacity, W)
    copy_keys: torch.Tensor  # (capacity, copy_window, d)
    copy_categories: torch.Tensor  # (capacity, copy_window)
    copy_positions: torch.Tensor

    @classmethod
    def empty(cls, model: InterestTransformer, capacity: int, dtype: torch.dtype) -> _Slabs:
        c = model.config
        head_dim = c.d_model // c.n_heads
        kv_shape = (c.n_layers, capacity, c.n_heads, c.window, head_dim)
        return cls(
            keys=torch.zeros(kv_shape, dtype=dtype),
            values=torch.zeros(kv_shape, dtype=dtype),
            positions=torch.full((capacity, c.window), NO_EVENT, dtype=torch.long),
            copy_keys=torch.zeros((capacity, c.copy_window, c.d_model), dtype=torch.float32),
            copy_categories=torch.zeros((capacity, c.copy_window), dtype=torch.long),
            copy_positions=torch.full((capacity, c.copy_window), NO_EVENT, dtype=torch.long),
        )

    @property
    def capacity(self) -> int:
        return self.positions.shape[0]

    def grown(self, model: InterestTransformer, capacity: int) -> _Slabs:
        bigger = _Slabs.empty(model, capacity, self.keys.dtype)
        n = self.capacity
        bigger.keys[:, :n] = self.keys
        bigger.values[:, :n] = self.values
        for name in ("positions", "copy_keys", "copy_categories", "copy_positions"):
            getattr(bigger, name)[:n] = getattr(self, name)
        return bigger

    def reset(self, slots: torch.Tensor) -> None:
        self.positions[slots] = NO_EVENT
        self.copy_positions[slots] = NO_EVENT


def split_softmax(dense: torch.Tensor, sparse: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A softmax, for each row ``n``, over ``dense[n, ..., :]`` and the ``sparse`` entries whose
    ``rows`` are ``n`` together; every row has at least one finite entry.

    >>> dense, sparse = torch.tensor([[0.0, float("-inf")], [1.0, 1.0]]), torch.tensor([0.0, 0.0, 1.0])
    >>> a, b = split_softmax(dense, sparse, torch.tensor([0, 0, 1]))
    >>> a.tolist(), b.tolist()
    ([[0.3333333432674408, 0.0], [0.3333333432674408, 0.3333333432674408]], [0.3333333432674408, 0.3333333432674408, 0.3333333432674408])
    """
    peak = dense.amax(dim=-1).scatter_reduce(
        0, rows.view(-1, *[1] * (sparse.dim() - 1)).expand_as(sparse), sparse, "amax"
    )
    dense = (dense - peak[..., None]).exp()
    sparse = (sparse - peak[rows]).exp()
    total = dense.sum(dim=-1).index_add_(0, rows, sparse)
    return dense / total[..., None], sparse / total[rows]


def bytes_per_user(model: InterestTransformer, dtype: torch.dtype = torch.float32) -> int:
    """Cache bytes one user occupies: K/V rows of every layer (in ``dtype``), copy keys (always
    float32: the copy head's attention is sharp, and rounding its keys moves the distribution
    most), copy categories and positions."""
    c = model.config
    element = torch.empty(0, dtype=dtype).element_size()
    kv = 2 * c.n_layers * c.window * c.d_model * element
    copy = c.copy_window * c.d_model * 4
    positions = 8 * (c.window + 2 * c.copy_window)
    return kv + copy + positions


class IncrementalEngine:
    """Batched, cached inference of :class:`InterestTransformer`, exact to a full forward.

    ``step`` takes a batch of events (several for one user are processed in order) and
    returns every user's interest distribution and top items. ``budget_bytes`` bounds the
    cache; ``cache_dtype`` (of the attention keys and values) may be ``torch.float16``, which
    holds 1.65 times the users within 1e-5 of the float32 outputs, or ``torch.bfloat16``
    (coarser; measured by ``bench/engine.py`` and ``bench/scoring.py``). ``swap`` installs a new model
    and drops every cache.
    """

    def __init__(
        self,
        model: InterestTransformer,
        model_version: str,
        *,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        cache_dtype: torch.dtype = torch.float32,
        top_k: int = 10,
        top_categories: int = 10,
        entropy: bool = False,
    ):
        self.budget_bytes = budget_bytes
        self.cache_dtype = cache_dtype
        self.top_k = top_k
        self.top_categories = top_categories
        self.entropy = entropy
        self.stats = EngineStats()
        self._install(model, model_version)

    def _install(self, model: InterestTransformer, model_version: str) -> None:
        self.model = model.eval()
        self.model_version = model_version
        self.bytes_per_user = bytes_per_user(model, self.cache_dtype)
        self.max_users = self.budget_bytes // self.bytes_per_user
        if self.max_users < 1:
            raise ValueError(
                f"a cache budget of {self.budget_bytes} bytes holds no user ({self.bytes_per_user} bytes each)"
            )
        if not 0 <= self.top_k <= model.config.n_items - 2:
            raise ValueError(f"top_k must be in 0..{model.config.n_items - 2}")
        self._slots: OrderedDict[str, int] = OrderedDict()  # user -> slot, least recently used first
        self._next_position: dict[str, int] = {}
        self._slabs = _Slabs.empty(model, min(self.max_users, 64), self.cache_dtype)
        self._free = list(range(self._slabs.capacity - 1, -1, -1))

    def swap(self, model: InterestTransformer, model_version: str) -> None:
        """Serve ``model`` from now on; every cached user is rebuilt on their next event."""
        self._install(model, model_version)
        self.stats.swaps += 1

    def forget(self, user: str) -> None:
        """Drop ``user``'s cache (their history changed); they are rebuilt on their next event."""
        slot = self._slots.pop(user, None)
        if slot is not None:
            del self._next_position[user]
            self._free.append(slot)

    def clear(self) -> None:
        """Drop every cached user."""
        self._install(self.model, self.model_version)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, user: object) -> bool:
        return user in self._slots

    @property
    def cache_bytes(self) -> int:
        """Bytes of cache slabs allocated now (they grow with the number of users)."""
        s = self._slabs
        return sum(t.numel() * t.element_size() for t in vars(s).values())

    @torch.inference_mode()
    def step(self, events: Sequence[UserEvent], history: HistorySource = NO_HISTORY) -> StepResult:
        """Outputs after each of ``events``; a user's events are taken in the order given.
        A user who is not cached at their event's position is rebuilt from ``history``.

        Consecutive events of one user are computed together, as a chunk that attends to
        the user's cache and to itself, so a batch full of one user's session costs about
        as much as a batch of distinct users.
        """
        if not events:
            raise ValueError("step needs at least one event")
        merged: dict[str, np.ndarray] = {}
        for chunks in self._rounds(events):
            outputs = self._step_round(chunks, events, history)
            rows = np.fromiter((i for chunk in chunks for i in chunk), dtype=np.int64)
            if not merged and np.array_equal(rows, np.arange(len(events))):
                merged = outputs  # the whole batch in one round, in the order given
                break
            for name, values in outputs.items():
                if name not in merged:
                    merged[name] = np.empty((len(events), *values.shape[1:]), dtype=values.dtype)
                merged[name][rows] = values
        return StepResult(
            users=tuple(e.user for e in events),
            positions=np.asarray([e.position for e in events], dtype=np.int64),
            model_version=self.model_version,
            **merged,
        )

    def _rounds(self, events: Sequence[UserEvent]) -> list[list[list[int]]]:
        """Rounds of chunks: a chunk is a run of one user's events at consecutive positions
        (at most ``chunk_limit``); a round holds at most one chunk per user and fits the cache."""
        limit = self.chunk_limit
        runs: dict[str, list[list[int]]] = defaultdict(list)
        for index, event in enumerate(events):
            user_runs = runs[event.user]
            if user_runs and len(user_runs[-1]) < limit and events[user_runs[-1][-1]].position + 1 == event.position:
                user_runs[-1].append(index)
            else:
                user_runs.append([index])
        rounds: list[list[list[int]]] = []
        for user_runs in runs.values():
            for r, run in enumerate(user_runs):
                if r == len(rounds):
                    rounds.append([])
                rounds[r].append(run)
        return [chunks[i : i + self.max_users] for chunks in rounds for i in range(0, len(chunks), self.max_users)]

    @property
    def chunk_limit(self) -> int:
        """Longest chunk: a ring must not be written twice at one slot in one step."""
        c = self.model.config
        return min(c.window, c.copy_window, MAX_CHUNK)

    def _step_round(
        self, chunks: list[list[int]], events: Sequence[UserEvent], history: HistorySource
    ) -> dict[str, np.ndarray]:
        heads = [events[chunk[0]] for chunk in chunks]
        slots: list[int] = []
        to_rebuild: list[int] = []
        first: list[int] = []
        for chunk, head in zip(chunks, heads):
            cached = head.user in self._slots and self._next_position[head.user] == head.position
            if cached:
                self._slots.move_to_end(head.user)
                self.stats.hits += 1
            self.stats.hits += len(chunk) - 1
            slots.append(self._slots[head.user] if cached else -1)
        for row, head in enumerate(heads):
            if slots[row] < 0:
                slots[row] = self._admit(head.user)
                (to_rebuild if head.position > 0 else first).append(row)
        self.stats.rebuilds += len(to_rebuild)
        self.stats.first_events += len(first)
        slot_ids = torch.tensor(slots, dtype=torch.long)
        self._slabs.reset(slot_ids[[*to_rebuild, *first]])
        if to_rebuild:
            self._rebuild([heads[r] for r in to_rebuild], slot_ids[to_rebuild], history)
        outputs = self._advance([[events[i] for i in chunk] for chunk in chunks], slot_ids)
        for chunk in chunks:
            last = events[chunk[-1]]
            self._next_position[last.user] = last.position + 1
        rebuilt = np.zeros(sum(len(c) for c in chunks), dtype=bool)
        starts = np.cumsum([0] + [len(c) for c in chunks[:-1]])
        rebuilt[starts[to_rebuild]] = True
        return {**outputs, "rebuilt": rebuilt}

    def _admit(self, user: str) -> int:
        """A slot for ``user``, evicting the least recently used user if the budget is full."""
        if user in self._slots:  # cached, but not at this position: recompute in place
            self._slots.move_to_end(user)
            return self._slots[user]
        if not self._free:
            if len(self._slots) < self.max_users:
                old = self._slabs.capacity
                self._slabs = self._slabs.grown(self.model, min(self.max_users, 2 * old))
                self._free = list(range(self._slabs.capacity - 1, old - 1, -1))
            else:
                evicted, slot = self._slots.popitem(last=False)
                del self._next_position[evicted]
                self._free.append(slot)
                self.stats.evictions += 1
        slot = self._free.pop()
        self._slots[user] = slot
        return slot

    def _rebuild(self, events: list[UserEvent], slots: torch.Tensor, history: HistorySource) -> None:
        """Fill the caches of ``slots`` from each user's events before their new one."""
        context = self.model.config.receptive_field - 1
        histories = [history.events_before(e.user, e.position, context) for e in events]
        histories = [h.slice(max(0, len(h) - context), len(h)) for h in histories]
        lengths = np.array([len(h) for h in histories])
        for length in np.unique(lengths[lengths > 0]):  # equal lengths together: no padding
            members = np.flatnonzero(lengths == length)
            self._fill([events[m] for m in members], slots[members], [histories[m] for m in members])

    def _fill(self, events: list[UserEvent], slots: torch.Tensor, histories: list[TokenSequence]) -> None:
        """:meth:`_rebuild` of users whose histories have one length."""
        config = self.model.config
        length = len(histories[0])
        starts = torch.tensor([e.position - length for e in events], dtype=torch.long)
        batch = pad_sequences(histories, starts.tolist())  # all of one length: nothing is padded
        encoding = self.model.encode(batch)
        for ring, tensors in ((config.window, "kv"), (config.copy_window, "copy")):
            kept = min(length, ring)  # each history's last events that the ring holds
            rows_t = torch.arange(len(events)).repeat_interleave(kept)
            steps_t = torch.arange(length - kept, length).repeat(len(events))
            positions = starts[rows_t] + steps_t
            target = slots[rows_t]
            s = self._slabs
            if tensors == "kv":
                s.positions[target, positions % ring] = positions
                for layer, (k, v) in enumerate(zip(encoding.keys, encoding.values)):
                    s.keys[layer, target, :, positions % ring] = k[rows_t, :, steps_t].to(self.cache_dtype)
                    s.values[layer, target, :, positions % ring] = v[rows_t, :, steps_t].to(self.cache_dtype)
            else:
                s.copy_positions[target, positions % ring] = positions
                s.copy_categories[target, positions % ring] = batch.categories[rows_t, steps_t]
                s.copy_keys[target, positions % ring] = encoding.copy_keys[rows_t, steps_t]

    def _advance(self, chunks: list[list[UserEvent]], slots: torch.Tensor) -> dict[str, np.ndarray]:
        """Run every chunk of new events through the model against its user's cached rows.

        The new events are packed, chunk after chunk, so that every projection,
        feed-forward and head runs on real events only, each in one call. A new event
        attends over two sets of keys: its user's ring (written before this step; which
        slots are inside its window comes from absolute positions, so slot order never
        matters) and the events of its chunk up to itself. The second set differs in size
        from event to event, so it is held as a flat list of (event, key) pairs and the
        softmax runs over both sets together (:func:`split_softmax`): no padded position is
        computed anywhere. The copy head reads its candidates the same way.
        """
        model, s, config = self.model, self._slabs, self.model.config
        lengths = np.array([len(chunk) for chunk in chunks])
        flat = np.array(
            [
                (e.tokens.item, e.tokens.category, e.tokens.behavior, e.tokens.gap, e.position)
                for c in chunks
                for e in c
            ],
            dtype=np.int64,
        )
        tokens = torch.from_numpy(flat[:, :4])
        positions = torch.from_numpy(flat[:, 4])
        chunk_starts = np.cumsum(lengths) - lengths
        row_chunks = np.repeat(np.arange(len(chunks)), lengths)
        steps = np.arange(len(flat)) - chunk_starts[row_chunks]  # each event's place in its chunk
        pair_rows_np = np.repeat(np.arange(len(flat)), steps + 1)  # (event, earlier event of its chunk or itself)
        pair_steps = np.arange(len(pair_rows_np)) - np.repeat(np.cumsum(steps + 1) - (steps + 1), steps + 1)
        pair_rows = torch.from_numpy(pair_rows_np)
        pair_keys = torch.from_numpy(chunk_starts[row_chunks][pair_rows_np] + pair_steps)
        row_slots = slots[torch.from_numpy(row_chunks)]
        ring_offsets = positions[:, None] - s.positions.index_select(0, row_slots)
        ring_visible = ((ring_offsets >= 0) & (ring_offsets < config.window))[:, None]  # (N, 1, W)

        x = model.embed(tokens[:, 0], tokens[:, 1], tokens[:, 2], tokens[:, 3])
        cos, sin = model.rotary(positions)
        cos, sin = cos[:, None, None], sin[:, None, None]  # broadcast over (query, key) and heads
        ring = positions % config.window
        h = x
        for layer, block in enumerate(cast(Sequence[Block], model.blocks)):
            attention = block.attn
            qkv = attention.qkv(block.ln_attn(h)).view(len(h), 3, attention.n_heads, attention.head_dim)
            rotated = apply_rotary(qkv[:, :2], cos, sin)  # queries and keys in one pass
            q, k, v = rotated[:, 0] * attention.head_dim**-0.5, rotated[:, 1], qkv[:, 2]
            ring_keys = s.keys[layer].index_select(0, row_slots).float()  # (N, heads, W, head_dim)
            ring_values = s.values[layer].index_select(0, row_slots).float()
            ring_scores = (q[:, :, None] @ ring_keys.transpose(-1, -2))[:, :, 0].masked_fill_(~ring_visible, NEG_INF)
            pair_scores = (q.index_select(0, pair_rows) * k.index_select(0, pair_keys)).sum(-1)  # (P, heads)
            ring_weights, pair_weights = split_softmax(ring_scores, pair_scores, pair_rows)
            attended = (ring_weights[:, :, None] @ ring_values)[:, :, 0]
            attended = attended.index_add_(0, pair_rows, pair_weights[..., None] * v.index_select(0, pair_keys))
            h = block.feed_forward(h + attention.out(attended.flatten(1)))
            s.keys[layer, row_slots, :, ring] = k.to(self.cache_dtype)
            s.values[layer, row_slots, :, ring] = v.to(self.cache_dtype)
        s.positions[row_slots, ring] = positions
        hidden = model.final_norm(h)
        copy_keys = model.copy_key(x)

        width = config.copy_window
        gate = model.copy_gate_probs(hidden)
        queries = model.copy_query(hidden)
        ring_positions = s.copy_positions.index_select(0, row_slots)
        ring_copy_offsets = positions[:, None] - ring_positions
        ring_copy_keys = s.copy_keys.index_select(0, row_slots).float()
        ring_logits = model.copy_logits(queries[:, None], ring_copy_keys, ring_copy_offsets[:, None])
        pair_logits = model.copy_logits(
            queries[pair_rows, None], copy_keys[pair_keys, None], (pair_rows - pair_keys)[:, None, None]
        )
        ring_copied, pair_copied = split_softmax(ring_logits[:, 0], pair_logits[:, 0, 0], pair_rows)
        share = 1 - gate
        # Every output's copy candidates, its user's copy ring then its chunk, in one table.
        candidates = width + int(lengths.max())
        candidate_weights = torch.zeros((len(h), candidates))
        candidate_categories = torch.zeros((len(h), candidates), dtype=torch.long)
        candidate_positions = torch.full((len(h), candidates), -1, dtype=torch.long)
        inside = torch.zeros((len(h), candidates), dtype=torch.bool)
        columns = torch.from_numpy(width + pair_steps)
        candidate_weights[:, :width] = share * ring_copied
        candidate_weights[pair_rows, columns] = share[pair_rows, 0] * pair_copied
        candidate_categories[:, :width] = s.copy_categories.index_select(0, row_slots)
        candidate_categories[pair_rows, columns] = tokens[pair_keys, 1]
        candidate_positions[:, :width] = ring_positions
        candidate_positions[pair_rows, columns] = positions[pair_keys]
        inside[:, :width] = (ring_copy_offsets >= 0) & (ring_copy_offsets < width)
        inside[pair_rows, columns] = True
        # Report the (at most copy_window) candidates inside the window, in a fixed width.
        keep = torch.argsort((~inside).to(torch.int8), dim=1, stable=True)[:, :width]
        copy_ring = positions % width
        s.copy_positions[row_slots, copy_ring] = positions
        s.copy_categories[row_slots, copy_ring] = tokens[:, 1]
        s.copy_keys[row_slots, copy_ring] = copy_keys

        best = min(self.top_categories, config.n_categories - OOV_ID - 1)  # padding and OOV are no categories
        out = readout(
            model, hidden, gate, candidate_categories, candidate_weights, best, OOV_ID + 1, with_entropy=self.entropy
        )
        top_scores, top_ids = model.top_items(hidden, self.top_k)
        return {
            "category_probs": out.probs.numpy(),
            "best_categories": out.best,
            **({"entropy": out.entropy} if self.entropy else {}),
            "top_items": top_ids.numpy(),
            "top_item_scores": top_scores.numpy(),
            "copy_weights": candidate_weights.gather(1, keep).numpy(),
            "copy_positions": torch.where(inside, candidate_positions, -1).gather(1, keep).numpy(),
            "copy_categories": candidate_categories.gather(1, keep).numpy(),
        }

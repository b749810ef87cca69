"""A causal Transformer over event sequences whose every output is streaming-exact.

Each event is embedded as item + category + behaviour + time-gap. Pre-LayerNorm blocks
use rotary position encoding and attend over a sliding window of ``window`` events, so the
output at event ``t`` depends only on events ``t - receptive_field + 1 .. t``. Two heads:

* next-category: a pointer-generator mixture. A generator softmax over all categories is
  mixed, through a learned gate, with a copy distribution: attention from the current
  state to the categories of the last ``copy_window`` events, with a learned per-offset
  recency bias. Repeat behaviour dominates real clickstreams; this lets the model copy.
  The mixture is the user's *interest distribution*.
* next-item: scores against the (tied) item embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.data.vocab import OOV_ID, PAD_ID
from model.net.config import ModelConfig

NEG_INF = float("-inf")


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded token ids, each ``(batch, time)``, and each row's absolute start position."""

    items: Tensor
    categories: Tensor
    behaviors: Tensor
    gaps: Tensor
    start_positions: Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.items.shape)  # type: ignore[return-value]


def rotary_tables(positions: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """cos/sin tables for absolute ``positions`` (any shape), computed in float64.

    Angles are formed in double precision so that a position of a million events is as
    accurate as position zero; the incremental engine relies on that.
    """
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(torch.float32), angles.sin().to(torch.float32)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def band_mask(length: int, window: int, device: torch.device | None = None) -> Tensor:
    """Boolean ``(length, length)`` mask: query ``t`` may see key ``s`` iff ``0 <= t - s < window``."""
    offsets = torch.arange(length, device=device)[:, None] - torch.arange(length, device=device)[None, :]
    return (offsets >= 0) & (offsets < window)


class SlidingWindowAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.d_model // config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout

    def project(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x (B, T, d)`` -> rotated q, rotated k and v, each ``(B, heads, T, head_dim)``."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def merge(self, heads: Tensor) -> Tensor:
        """``(B, heads, T, head_dim)`` -> ``(B, T, d)`` through the output projection."""
        batch, _, length, _ = heads.shape
        return self.out(heads.transpose(1, 2).reshape(batch, length, -1))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Attention output ``(B, T, d)`` and the rotated keys and values it attended over."""
        q, k, v = self.project(x, cos, sin)
        dropout = self.dropout if self.training else 0.0
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)), k, v


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.d_model)
        self.attn = SlidingWindowAttention(config)
        self.ln_ffn = nn.LayerNorm(config.d_model)
        self.ffn = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff),
            nn.GELU(),
            nn.Linear(config.d_ff, config.d_model),
        )
        self.dropout = nn.Dropout(config.dropout)

    def feed_forward(self, x: Tensor) -> Tensor:
        return x + self.dropout(self.ffn(self.ln_ffn(x)))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The block's output and its attention's keys and values (what a cache keeps)."""
        attended, k, v = self.attn(self.ln_attn(x), cos, sin, mask)
        return self.feed_forward(x + self.dropout(attended)), k, v


@dataclass(frozen=True)
class Encoding:
    """Everything a forward pass computes that the heads or a cache need.

    ``hidden`` ``(B, T, d)``: final states, position ``t`` summarises events ``<= t``.
    ``copy_keys`` ``(B, T, d)``: pointer keys of the events. ``categories`` ``(B, T)``:
    their category ids. ``keys`` / ``values``: per layer, ``(B, heads, T, head_dim)``.
    """

    hidden: Tensor
    copy_keys: Tensor
    categories: Tensor
    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]


class InterestTransformer(nn.Module):
    """The interest model. See the module docstring for the architecture.

    >>> _ = torch.manual_seed(0)
    >>> config = ModelConfig(n_items=20, n_categories=6, d_model=16, n_heads=2, d_ff=32, window=4, copy_window=4)
    >>> model = InterestTransformer(config).eval()
    >>> ids = torch.tensor([[2, 3, 4]])
    >>> start = torch.zeros(1, dtype=torch.long)
    >>> batch = TokenBatch(ids, ids % 6, torch.full_like(ids, 2), torch.ones_like(ids), start)
    >>> with torch.no_grad():
    ...     probs = model.category_probs(model.encode(batch))
    >>> tuple(probs.shape), round(float(probs.sum(-1)[0, -1]), 5)
    ((1, 3, 6), 1.0)
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.item_embedding = nn.Embedding(config.n_items, d, padding_idx=PAD_ID)
        self.category_embedding = nn.Embedding(config.n_categories, d, padding_idx=PAD_ID)
        self.behavior_embedding = nn.Embedding(config.n_behaviors, d, padding_idx=PAD_ID)
        self.gap_embedding = nn.Embedding(config.n_gap_buckets, d)
        self.embedding_norm = nn.LayerNorm(d)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(d)
        self.category_head = nn.Linear(d, config.n_categories)
        self.item_bias = nn.Parameter(torch.zeros(config.n_items))
        self.copy_query = nn.Linear(d, d)
        self.copy_key = nn.Linear(d, d)
        # Prior: a recent event is more likely to repeat than an old one; training adjusts it.
        self.copy_recency = nn.Parameter(-torch.log1p(torch.arange(config.copy_window, dtype=torch.float32)))
        self.copy_gate = nn.Linear(d, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    # --- per-event pieces, shared with the incremental engine -------------------------

    def embed(self, items: Tensor, categories: Tensor, behaviors: Tensor, gaps: Tensor) -> Tensor:
        x = (
            self.item_embedding(items)
            + self.category_embedding(categories)
            + self.behavior_embedding(behaviors)
            + self.gap_embedding(gaps)
        )
        return self.embedding_dropout(self.embedding_norm(x))

    def rotary(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        return rotary_tables(positions, self.config.d_model // self.config.n_heads, self.config.rope_base)

    def copy_logits(self, query: Tensor, keys: Tensor, offsets: Tensor) -> Tensor:
        """Pointer logits of queries ``(..., Q, d)`` over keys ``(..., K, d)`` that lie ``offsets
        (..., Q, K)`` events back; offsets outside ``0 .. copy_window - 1`` are masked out.
        """
        window = self.config.copy_window
        scores = query @ keys.transpose(-1, -2) / math.sqrt(query.shape[-1])
        inside = (offsets >= 0) & (offsets < window)
        return torch.where(inside, scores + self.copy_recency[offsets.clamp(0, window - 1)], NEG_INF)

    # --- full forward over right-padded sequences -------------------------------------

    def encode(self, batch: TokenBatch) -> Encoding:
        _, length = batch.shape
        positions = batch.start_positions[:, None] + torch.arange(length, device=batch.items.device)
        cos, sin = self.rotary(positions)
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        mask = band_mask(length, self.config.window, batch.items.device)
        x = self.embed(batch.items, batch.categories, batch.behaviors, batch.gaps)
        copy_keys = self.copy_key(x)
        keys, values = [], []
        for block in self.blocks:
            x, k, v = block(x, cos, sin, mask)
            keys.append(k)
            values.append(v)
        return Encoding(self.final_norm(x), copy_keys, batch.categories, tuple(keys), tuple(values))

    def copy_attention(self, encoding: Encoding) -> Tensor:
        """Pointer weights ``(B, T, T)`` from each position over the last ``copy_window`` events."""
        steps = torch.arange(encoding.hidden.shape[1], device=encoding.hidden.device)
        query = self.copy_query(encoding.hidden)
        return self.copy_logits(query, encoding.copy_keys, steps[:, None] - steps[None, :]).softmax(dim=-1)

    def generator_log_probs(self, hidden: Tensor) -> Tensor:
        logits = self.category_head(hidden)
        logits[..., PAD_ID] = NEG_INF
        return logits.log_softmax(dim=-1)

    def copy_gate_probs(self, hidden: Tensor) -> Tensor:
        """Weight of the generator in the mixture, ``(..., 1)``."""
        return torch.sigmoid(self.copy_gate(hidden))

    def category_mixture(self, encoding: Encoding) -> tuple[Tensor, Tensor]:
        """The two parts of the interest distribution after each event.

        Returns the generator part ``gate * p_gen``, ``(B, T, n_categories)``, and the copy
        weights ``(1 - gate) * attention``, ``(B, T, T)``: the mass each output gives to
        each earlier event's category.
        """
        batch, length = encoding.hidden.shape[:2]
        rows = torch.arange(batch, device=encoding.hidden.device).repeat_interleave(length)
        columns = torch.arange(length, device=encoding.hidden.device).repeat(batch)
        generated, copy_weights = self.category_mixture_at(encoding, rows, columns)
        return generated.view(batch, length, -1), copy_weights.view(batch, length, length)

    def category_mixture_at(self, encoding: Encoding, rows: Tensor, columns: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`category_mixture` of the outputs ``(rows[i], columns[i])`` only,
        ``(N, n_categories)`` and ``(N, T)``: only they pay for the heads."""
        hidden = encoding.hidden[rows, columns]
        steps = torch.arange(encoding.hidden.shape[1], device=hidden.device)
        offsets = (columns[:, None] - steps[None, :])[:, None]
        gate = self.copy_gate_probs(hidden)
        weights = self.copied(self.copy_query(hidden)[:, None], 1 - gate[:, None], encoding.copy_keys[rows], offsets)
        return self.generated(hidden, gate), weights[:, 0]

    def category_probs(self, encoding: Encoding) -> Tensor:
        """The interest distribution ``(B, T, n_categories)`` after each event."""
        return mix(*self.category_mixture(encoding), encoding.categories)

    def category_target_log_prob(self, encoding: Encoding, targets: Tensor, mask: Tensor) -> Tensor:
        """``log p(target)`` under the mixture at the ``mask``ed positions, ``(N,)``.

        Only the selected positions pay for the softmax over all categories.
        """
        selected = encoding.hidden[mask]
        gate = self.copy_gate_probs(selected).squeeze(-1)
        attention = self.copy_attention(encoding)[mask]
        targets = targets[mask]
        copied = (attention * (encoding.categories[mask.nonzero()[:, 0]] == targets[:, None])).sum(-1)
        generated = self.generator_log_probs(selected).gather(-1, targets[:, None]).squeeze(-1).exp()
        return torch.log(gate * generated + (1 - gate) * copied + 1e-9)

    def generated(self, hidden: Tensor, gate: Tensor) -> Tensor:
        """The generator part of the interest mixture of outputs ``hidden (..., d)`` whose
        generator weight is ``gate`` (:meth:`copy_gate_probs`): ``gate * p_gen``, ``(..., n_categories)``."""
        return gate * self.generator_log_probs(hidden).exp()

    def copied(self, query: Tensor, share: Tensor, copy_keys: Tensor, copy_offsets: Tensor) -> Tensor:
        """The copy part: the mass ``(G, Q, K)`` that each of ``Q`` outputs per group, with copy
        queries ``(G, Q, d)`` and copy ``share (G, Q, 1)``, gives each of the group's ``K``
        candidate events, which have pointer keys ``(G, K, d)`` and lie ``copy_offsets (G, Q, K)``
        events back (masked outside the copy window)."""
        return share * self.copy_logits(query, copy_keys, copy_offsets).softmax(dim=-1)

    def interest(
        self, hidden: Tensor, copy_keys: Tensor, copy_offsets: Tensor, copy_categories: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The interest distribution ``(G, Q, n_categories)`` of outputs ``hidden (G, Q, d)``,
        each group of ``Q`` outputs copying from the same ``K`` candidate events (pointer keys
        ``(G, K, d)``, ``copy_categories (G, K)``, offsets as in :meth:`copied`); and the mass
        copied from each candidate, ``(G, Q, K)``.
        """
        gate = self.copy_gate_probs(hidden)
        weights = self.copied(self.copy_query(hidden), 1 - gate, copy_keys, copy_offsets)
        return mix(self.generated(hidden, gate), weights, copy_categories), weights

    def top_items(self, hidden: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The ``k`` best next items of outputs ``hidden (B, d)`` (never padding or OOV): scores, ids."""
        if k == 0:  # the stream worker asks for none: skip scoring every item
            return hidden.new_empty((len(hidden), 0)), torch.empty((len(hidden), 0), dtype=torch.long)
        scores = self.item_logits(hidden)
        scores[:, [PAD_ID, OOV_ID]] = NEG_INF
        return scores.topk(k, dim=-1)

    def item_logits(self, hidden: Tensor, item_ids: Tensor | None = None) -> Tensor:
        """Scores over all items, or over ``item_ids`` only (for sampled softmax)."""
        if item_ids is None:
            return hidden @ self.item_embedding.weight.T + self.item_bias
        return hidden @ self.item_embedding.weight[item_ids].T + self.item_bias[item_ids]


def mix(generated: Tensor, copy_weights: Tensor, categories: Tensor) -> Tensor:
    """Add each output's copy weights onto the category ids of the events they point at."""
    return generated.scatter_add(-1, categories[..., None, :].expand_as(copy_weights), copy_weights)

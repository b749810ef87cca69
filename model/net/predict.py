"""Batched offline scoring: the model's predictions at chosen outputs of many histories."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from model.data.vocab import TokenSequence
from model.net.batching import Piece, batches_by_length, pad_batch, pieces_for
from model.net.transformer import InterestTransformer

Head = Literal["category", "item"]


@dataclass(frozen=True)
class Scored:
    """Scores of ``N`` wanted outputs.

    ``scores`` are interest probabilities (category head) or logits (item head). For the
    category head, ``copy_weights[r, c]`` is the mass that output ``r`` copies from event
    ``window_starts[r] + c``; it lets a caller credit categories outside the vocabulary.
    """

    sequences: np.ndarray
    outputs: np.ndarray
    scores: np.ndarray
    copy_weights: np.ndarray | None = None
    window_starts: np.ndarray | None = None


@torch.no_grad()
def score_outputs(
    model: InterestTransformer,
    tokens: Sequence[TokenSequence],
    wanted: Sequence[np.ndarray],
    head: Head,
    batch_size: int = 64,
    max_outputs: int = 256,
) -> Iterator[Scored]:
    """Score every wanted output; ``wanted[s]`` lists output positions of sequence ``s``.

    Output ``o`` has seen events ``<= o`` and predicts event ``o + 1``.
    """
    was_training = model.training
    model.eval()
    context = model.config.receptive_field - 1
    pieces: list[Piece] = []
    for s, positions in enumerate(wanted):
        if len(positions):
            candidates = pieces_for(s, int(positions.min()), int(positions.max()) + 1, max_outputs, context)
            pieces.extend(p for p in candidates if np.any((positions >= p.first_output) & (positions < p.stop)))
    try:
        for group in batches_by_length(pieces, batch_size):
            batch = pad_batch(tokens, group)
            encoding = model.encode(batch)
            rows: list[int] = []
            columns: list[int] = []
            sequences: list[int] = []
            outputs: list[int] = []
            starts: list[int] = []
            for row, piece in enumerate(group):
                positions = wanted[piece.sequence]
                inside = positions[(positions >= piece.first_output) & (positions < piece.stop)]
                rows.extend([row] * len(inside))
                columns.extend(inside - piece.input_start)
                sequences.extend([piece.sequence] * len(inside))
                outputs.extend(inside)
                starts.extend([piece.input_start] * len(inside))
            rows_t, columns_t = torch.tensor(rows), torch.tensor(columns)
            if head == "category":
                generated, copy_weights = model.category_mixture_at(encoding, rows_t, columns_t)
                probs = generated.scatter_add(-1, batch.categories[rows_t], copy_weights)
                yield Scored(
                    np.asarray(sequences),
                    np.asarray(outputs),
                    probs.numpy(),
                    copy_weights.numpy(),
                    np.asarray(starts),
                )
            else:
                yield Scored(
                    np.asarray(sequences),
                    np.asarray(outputs),
                    model.item_logits(encoding.hidden[rows_t, columns_t]).numpy(),
                )
    finally:
        model.train(was_training)

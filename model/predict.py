"""Batched offline scoring: the model's predictions at chosen outputs of many histories."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch

from model.batching import Piece, batches_by_length, pad_batch, pieces_for
from model.transformer import InterestTransformer
from model.vocab import TokenSequence

Head = Literal["category", "item"]


@torch.no_grad()
def score_outputs(
    model: InterestTransformer,
    tokens: Sequence[TokenSequence],
    wanted: Sequence[np.ndarray],
    head: Head,
    batch_size: int = 64,
    max_outputs: int = 256,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(sequence ids, output positions, scores)`` for every wanted output.

    ``wanted[s]`` lists the output positions of sequence ``s`` to score (output ``o`` has
    seen events ``<= o``). Category scores are interest probabilities; item scores are logits.
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
            hidden = model.hidden(batch)
            rows, columns, sequences, outputs = [], [], [], []
            for row, piece in enumerate(group):
                positions = wanted[piece.sequence]
                inside = positions[(positions >= piece.first_output) & (positions < piece.stop)]
                rows.extend([row] * len(inside))
                columns.extend(inside - piece.input_start)
                sequences.extend([piece.sequence] * len(inside))
                outputs.extend(inside)
            rows_t, columns_t = torch.tensor(rows), torch.tensor(columns)
            if head == "category":
                scores = model.category_probs(hidden, batch)[rows_t, columns_t]
            else:
                scores = model.item_logits(hidden[rows_t, columns_t])
            yield np.asarray(sequences), np.asarray(outputs), scores.numpy()
    finally:
        model.train(was_training)

"""Cutting long sequences into exact pieces and padding pieces into batches.

Output ``o`` of a sequence predicts event ``o + 1``. A :class:`Piece` covers the outputs
``[first_output, stop)`` and carries as input every event those outputs can see (their
receptive field), so a long history is processed in bounded pieces with exactly the
outputs a single pass would give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.data.vocab import PAD_ID, TokenSequence
from model.net.transformer import TokenBatch


@dataclass(frozen=True, slots=True)
class Piece:
    """Inputs ``tokens[input_start:stop]``; outputs ``first_output..stop-1`` are wanted."""

    sequence: int
    input_start: int
    first_output: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.input_start


def pieces_for(sequence: int, first_output: int, stop: int, max_outputs: int, context: int) -> list[Piece]:
    """Split outputs ``[first_output, stop)`` into pieces of at most ``max_outputs`` outputs.

    >>> [(p.input_start, p.first_output, p.stop) for p in pieces_for(0, 0, 10, 4, context=3)]
    [(0, 0, 4), (1, 4, 8), (5, 8, 10)]
    """
    pieces = []
    for start in range(first_output, stop, max_outputs):
        pieces.append(Piece(sequence, max(0, start - context), start, min(start + max_outputs, stop)))
    return pieces


def pad_sequences(
    sequences: Sequence[TokenSequence], start_positions: Sequence[int], device: torch.device | None = None
) -> TokenBatch:
    """Right-pad token sequences into one :class:`TokenBatch`; ``start_positions`` are their
    first events' absolute positions."""
    arrays = np.full((4, len(sequences), max(len(s) for s in sequences)), PAD_ID, dtype=np.int64)
    for row, seq in enumerate(sequences):
        for column, values in enumerate((seq.items, seq.categories, seq.behaviors, seq.gaps)):
            arrays[column, row, : len(seq)] = values
    items, categories, behaviors, gaps = (torch.from_numpy(a).to(device) for a in arrays)
    starts = torch.tensor(list(start_positions), dtype=torch.long, device=device)
    return TokenBatch(items, categories, behaviors, gaps, starts)


def pad_batch(
    tokens: Sequence[TokenSequence], pieces: Sequence[Piece], device: torch.device | None = None
) -> TokenBatch:
    """Right-pad the inputs of ``pieces`` into one :class:`TokenBatch`."""
    windows = [tokens[p.sequence].slice(p.input_start, p.stop) for p in pieces]
    return pad_sequences(windows, [p.input_start for p in pieces], device)


def batches_by_length(
    pieces: Sequence[Piece], batch_size: int, rng: np.random.Generator | None = None
) -> list[list[Piece]]:
    """Group pieces of similar length (little padding); shuffle batch order when ``rng`` is given."""
    # Random tie-breaks let equal-length pieces meet different neighbours each epoch.
    jitter = rng.random(len(pieces)) if rng is not None else np.zeros(len(pieces))
    order = sorted(range(len(pieces)), key=lambda i: (pieces[i].length, jitter[i]))
    batches = [[pieces[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches

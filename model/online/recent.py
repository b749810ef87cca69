"""The shift detector's input: the model's interest read from a user's last few events only.

The published interest reads the user's whole history (through the engine's cache). Fed
that, the detector saw moves late: after a user turns to new categories the full-history
model keeps mass on the old ones for many events, because in real histories users return
to them. So the detector reads the model run over the last ``recent_events`` events alone
(the first of them with no known gap before it): the user's recent interest as the model
understands it, compared by the detector with its own slow profile. It costs one forward
over a short window per event, batched; the worker (:mod:`stream.worker.pipeline`) and
``detect-eval`` compute it with :func:`recent_interest`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from model.net.checkpoint import Checkpoint
from model.data.loaders import UserSequence
from model.online.distribution import Distribution, from_model
from model.training.evaluate import copied_outside_vocabulary
from model.net.predict import Scored, score_outputs
from model.net.transformer import InterestTransformer
from model.data.vocab import TokenSequence, Tokenizer, Vocabulary


def scored_interest(
    scored: Scored, tokens: Sequence[TokenSequence], raw_categories: Sequence[Sequence[str]], vocabulary: Vocabulary, m: int
) -> Iterator[tuple[int, int, Distribution]]:
    """``(sequence, output position, interest)`` for each category output of ``scored``,
    by raw category id, ``m`` categories kept."""
    k = min(m, scored.scores.shape[1] - 1)
    best = np.argpartition(-scored.scores, k, axis=1)[:, :k]
    for row, (s, position) in enumerate(zip(scored.sequences, scored.outputs)):
        copied = copied_outside_vocabulary(scored, row, tokens[s].categories, raw_categories[s])
        yield s, position, from_model(scored.scores[row].astype(np.float64), best[row], vocabulary, copied, m)


def recent_interest(
    model: InterestTransformer, tokenizer: Tokenizer, windows: Sequence[TokenSequence], raw_categories: Sequence[Sequence[str]], m: int
) -> list[Distribution]:
    """The interest after the last event of each window (tokens, and their raw categories),
    reading that window only; ``m`` categories kept."""
    out: list[Distribution] = [{} for _ in windows]
    wanted = [np.array([len(w) - 1]) for w in windows]
    for scored in score_outputs(model, windows, wanted, "category", batch_size=256):
        for s, _, interest in scored_interest(scored, windows, raw_categories, tokenizer.categories, m):
            out[s] = interest
    return out


def recent_interest_along(
    checkpoint: Checkpoint, sequences: Sequence[UserSequence], recent_events: int, m: int, progress: bool = True
) -> list[list[Distribution]]:
    """:func:`recent_interest` after every event of every sequence, as the worker computes it."""
    tokenizer = checkpoint.tokenizer
    windows = [
        _window(sequence, max(0, t + 1 - recent_events), t + 1) for sequence in sequences for t in range(len(sequence))
    ]  # fmt: skip
    flat: list[Distribution] = []
    chunk = 4096
    with tqdm(total=len(windows), desc="recent interest", unit="event", leave=False, disable=not progress) as bar:
        for start in range(0, len(windows), chunk):
            part = windows[start : start + chunk]
            flat += recent_interest(checkpoint.model, tokenizer, [tokenizer.encode(w) for w in part], [w.categories for w in part], m)
            bar.update(len(part))
    out, start = [], 0
    for sequence in sequences:
        out.append(flat[start : start + len(sequence)])
        start += len(sequence)
    return out


def _window(sequence: UserSequence, start: int, stop: int) -> UserSequence:
    return replace(
        sequence,
        items=sequence.items[start:stop],
        categories=sequence.categories[start:stop],
        behaviors=sequence.behaviors[start:stop],
        timestamps=None if sequence.timestamps is None else sequence.timestamps[start:stop],
    )

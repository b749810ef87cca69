"""The recent interest's packed forward equals the model's own full forward over each window."""

from __future__ import annotations

import numpy as np
import torch

from model.data.vocab import TokenSequence
from model.net.batching import pad_sequences
from model.online.recent import TokenWindows, window_interest


def test_windows_of_every_length_equal_a_full_forward_over_each(small_model, small_config) -> None:
    """Lengths 1 to three times the attention window (the band mask matters past it), in a
    shuffled order (windows are packed by length and put back)."""
    rng = np.random.default_rng(0)
    lengths = rng.permutation(np.repeat(np.arange(1, 3 * small_config.window + 1), 3))
    windows = [
        np.stack(
            [
                rng.integers(2, small_config.n_items, n),
                rng.integers(0, small_config.n_categories, n),
                rng.integers(2, small_config.n_behaviors, n),
                np.r_[0, rng.integers(1, small_config.n_gap_buckets, n - 1)],
            ],
            axis=1,
        )
        for n in lengths
    ]
    readout, copied = window_interest(small_model, TokenWindows.of(windows), k=3)
    for row, window in enumerate(windows):
        sequence = TokenSequence(*(np.ascontiguousarray(c) for c in window.T))
        batch = pad_sequences([sequence], [0])
        with torch.inference_mode():
            encoding = small_model.encode(batch)
            last = torch.tensor([len(window) - 1])
            generated, weights = small_model.category_mixture_at(encoding, torch.tensor([0]), last)
            full = generated.scatter_add(-1, batch.categories, weights)[0]
        assert torch.allclose(readout.probs[row], full, atol=1e-6), row
        assert torch.allclose(copied[row, : len(window)], weights[0], atol=1e-6)
        assert not copied[row, len(window) :].any()
        assert set(readout.best[row].tolist()) == set(torch.topk(full, 3).indices.tolist())


def test_shared_rows_at_stream_positions_equal_each_window_on_its_own(small_model, small_config) -> None:
    """A user's burst as the worker batches it: consecutive windows share their common token
    rows, each row rotated once at its position in the stream (far from 0 here), and every
    window reads as if it were alone, rotated from 0."""
    rng = np.random.default_rng(1)
    n, recent, first_position = 12, 4, 1_000_000
    events = np.stack(
        [
            rng.integers(2, small_config.n_items, n),
            rng.integers(0, small_config.n_categories, n),
            rng.integers(2, small_config.n_behaviors, n),
            rng.integers(1, small_config.n_gap_buckets, n),
        ],
        axis=1,
    )
    starts = np.maximum(0, np.arange(n) + 1 - recent)
    openers = events[starts].copy()
    openers[:, 3] = 0  # each window opens without a gap: a row of its own
    tokens = np.concatenate([events, openers])
    rows = np.concatenate([np.r_[n + e, np.arange(s + 1, e + 1)] for e, s in enumerate(starts.tolist())])
    positions = first_position + np.concatenate([np.arange(n), starts])
    lengths = np.arange(n) + 1 - starts
    with torch.no_grad():  # sharp attention, so that a row rotated at a wrong position shows
        for block in small_model.blocks:
            block.attn.qkv.weight[: 2 * small_config.d_model] *= 30.0
            block.attn.out.weight *= 10.0
    shared = TokenWindows(tokens, lengths, rows, positions)
    alone = TokenWindows.of([tokens[rows[a : a + m]] for a, m in zip(shared.starts, lengths, strict=True)])
    shared_out, shared_copied = window_interest(small_model, shared, k=3)
    alone_out, alone_copied = window_interest(small_model, alone, k=3)
    assert torch.allclose(shared_out.probs, alone_out.probs, atol=1e-6)
    assert torch.allclose(shared_copied, alone_copied, atol=1e-6)
    misplaced = positions.copy()
    misplaced[n:] += 1  # every opener one step late
    wrong_out, _ = window_interest(small_model, TokenWindows(tokens, lengths, rows, misplaced), k=3)
    assert (wrong_out.probs - alone_out.probs).abs().max() > 1e-4

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

"""From the model's final states to what is published: the interest distribution over the
whole category vocabulary, its best categories and its entropy.

The distribution is as wide as the vocabulary (thousands of categories), so for a batch of
hundreds of outputs every pass over it streams megabytes. :func:`readout` makes all of them
(the category head, the generator's softmax, the copy mass, the best ``k`` and the entropy)
block by block of :data:`BLOCK` rows, each block while it is still in the CPU's cache.

>>> from model.net.config import ModelConfig
>>> from model.net.transformer import InterestTransformer
>>> _ = torch.manual_seed(0)
>>> model = InterestTransformer(ModelConfig(n_items=20, n_categories=6, d_model=16, n_heads=2, d_ff=32, window=4, copy_window=4)).eval()
>>> hidden = torch.randn(3, 16)
>>> gate = model.copy_gate_probs(hidden)
>>> categories, weights = torch.tensor([[2, 3], [4, 4], [5, 0]]), (1 - gate) * torch.tensor([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]])
>>> out = readout(model, hidden, gate, categories, weights, k=2, skip=2)
>>> bool(torch.allclose(out.probs.sum(1), torch.ones(3))), out.best.shape, out.entropy.shape
(True, (3, 2), (3,))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from model.net.transformer import InterestTransformer
from model.online.entropy import mixture_entropy
from model.online.topk import best_ids

BLOCK = 128  # rows per block: 1.5 MB of a 3,000-category distribution (16 to 128 rows measured within the noise)


@dataclass(frozen=True, slots=True)
class Readout:
    """``probs`` ``(N, n_categories)`` float32; ``best`` ``(N, k)``: the most probable ids
    (from ``skip`` on), most probable first (ties: the lower id first); ``entropy`` ``(N,)`` in nats, float64."""

    probs: Tensor
    best: np.ndarray
    entropy: np.ndarray


@torch.inference_mode()
def readout(
    model: InterestTransformer,
    hidden: Tensor,
    gate: Tensor,
    copy_categories: Tensor,
    copy_weights: Tensor,
    k: int,
    skip: int,
    with_entropy: bool = True,
) -> Readout:
    """The interest distribution of outputs ``hidden (N, d)`` whose generator weight is
    ``gate (N, 1)`` and which copy ``copy_weights (N, K)`` onto ``copy_categories (N, K)``
    (the entropy left at zero unless ``with_entropy``)."""
    n = len(hidden)
    probs = torch.empty((n, model.config.n_categories))
    best = np.empty((n, k), dtype=np.int64)
    entropies = np.zeros(n)
    gates = gate[:, 0].numpy()
    categories = copy_categories.numpy()
    for start in range(0, n, BLOCK):
        rows = slice(start, start + BLOCK)
        log_generated = model.generator_log_probs(hidden[rows])
        generated = log_generated.exp()
        block = torch.mul(gate[rows], generated, out=probs[rows]).scatter_add_(
            1, copy_categories[rows], copy_weights[rows]
        )
        values = block.numpy()
        best[rows] = best_ids(values, k, skip)
        if with_entropy:
            entropies[rows] = mixture_entropy(
                log_generated.numpy(), generated.numpy(), values, gates[rows], categories[rows]
            )
    return Readout(probs, best, entropies)

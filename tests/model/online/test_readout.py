"""The blocked readout equals the plain computation: mixture, best ids, entropy."""

from __future__ import annotations

import numpy as np
import torch

from model.online import readout as readout_module
from model.online.readout import readout


def test_a_readout_in_blocks_equals_the_whole_computation(small_model, small_config, monkeypatch) -> None:
    monkeypatch.setattr(readout_module, "BLOCK", 7)  # several blocks and a ragged last one
    generator = torch.Generator().manual_seed(0)
    n, candidates = 30, 5
    hidden = torch.randn((n, small_config.d_model), generator=generator)
    categories = torch.randint(0, small_config.n_categories, (n, candidates), generator=generator)
    with torch.inference_mode():
        gate = small_model.copy_gate_probs(hidden)
        weights = (1 - gate) * torch.rand((n, candidates), generator=generator).softmax(dim=1)
        out = readout(small_model, hidden, gate, categories, weights, k=4, skip=2)
        whole = small_model.generated(hidden, gate).scatter_add(1, categories, weights)
    assert torch.allclose(out.probs, whole, atol=1e-7)  # block-sized products round a little differently
    assert np.array_equal(out.best, out.probs[:, 2:].topk(4, dim=1).indices.numpy() + 2)
    p = out.probs.double()  # the direct sum over the rounded float32 mixture: equal up to that rounding
    assert np.abs(out.entropy - (-torch.special.xlogy(p, p).sum(1)).numpy()).max() < 1e-7

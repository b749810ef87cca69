"""The mixture's entropy from the generator's log-probabilities equals the direct sum."""

from __future__ import annotations

import numpy as np
import pytest

from model.online.entropy import mixture_entropy


def _mixture(seed: int, n: int, columns: int, width: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (n, columns))
    logits[:, 0] = -np.inf  # padding: no generator mass
    log_generated = (logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)).astype(np.float32)
    generated = np.exp(log_generated)
    gate = rng.uniform(0.0, 1.0, n).astype(np.float32)
    gate[0] = 1.0  # nothing copied
    gate[1] = 0.0  # everything copied
    categories = rng.integers(0, columns, (n, width))
    categories[:, width // 2 :] = categories[:, : width - width // 2]  # repeated categories
    categories[2] = 0  # copying padding (masked candidates, no mass)
    weights = rng.uniform(0.0, 1.0, (n, width))
    weights[2] = 0.0
    weights *= (1 - gate[:, None]) / np.maximum(weights.sum(1, keepdims=True), 1e-30)
    probs = gate[:, None] * generated
    np.add.at(probs, (np.repeat(np.arange(n), width), categories.ravel()), weights.ravel().astype(np.float32))
    return log_generated, generated, probs.astype(np.float32), gate, categories


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_entropy_of_the_mixture_equals_the_direct_sum(seed: int) -> None:
    log_generated, generated, probs, gate, categories = _mixture(seed, n=40, columns=300, width=12)
    p = probs.astype(np.float64)
    direct = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(1)
    entropy = mixture_entropy(log_generated, generated, probs, gate, categories)
    assert np.abs(entropy - direct).max() < 1e-6  # the float32 rounding of p, not the method
    assert entropy[1] == pytest.approx(direct[1], abs=1e-9)  # all copied: the same logarithms


def test_rows_must_agree() -> None:
    log_generated, generated, probs, gate, categories = _mixture(0, n=4, columns=10, width=3)
    with pytest.raises(ValueError, match="one row per output"):
        mixture_entropy(log_generated, generated, probs, gate[:3], categories)

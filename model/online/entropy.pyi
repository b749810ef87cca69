"""Type stub of the compiled :mod:`model.online.entropy` (``entropy.pyx``)."""

import numpy as np

def mixture_entropy(
    log_generated: np.ndarray,
    generated: np.ndarray,
    probs: np.ndarray,
    gate: np.ndarray,
    copy_categories: np.ndarray,
) -> np.ndarray: ...

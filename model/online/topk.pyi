"""Type stub of the compiled :mod:`model.online.topk` (``topk.pyx``)."""

import numpy as np

MAX_K: int

def best_ids(probs: np.ndarray, k: int, skip: int = 0) -> np.ndarray: ...

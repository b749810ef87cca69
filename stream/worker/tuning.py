"""How a worker process is set up for scoring, once, at its start (``bench/scoring.py`` too).

* PyTorch computes with :attr:`~stream.settings.Settings.compute_threads` threads: scoring runs
  in the event loop's executor, and the loop keeps a core of its own.
* The garbage collector leaves alone what was loaded before (:func:`gc.freeze`: the model, the
  vocabularies, the code), and runs its young generation every 20,000 allocations instead of
  700. Scoring a batch allocates tens of thousands of short-lived objects (distributions,
  records) that reference counting frees anyway; with the defaults the collector runs many
  times per batch, and its older passes rescan every user's row held in memory.
"""

from __future__ import annotations

import gc

import torch

YOUNG_COLLECTION_EVERY = 20_000


def tune_for_scoring(threads: int) -> None:
    torch.set_num_threads(threads)
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, older, oldest)

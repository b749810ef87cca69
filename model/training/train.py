"""Offline training: AdamW, cross-entropy on both heads, early stopping on validation.

The category head is trained by the negative log-likelihood of the pointer-generator
mixture; the item head by full-softmax cross-entropy, or by sampled softmax (uniform
negatives, accidental hits masked) once the item vocabulary exceeds
``full_softmax_max_items``. Model selection uses the protocol's validation NDCG@10.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.data.loaders import EventLog
from model.data.splits import TRAIN, VALIDATION, SplitSpec, before_test
from model.data.vocab import OOV_ID, PAD_ID, Tokenizer, TokenSequence
from model.net.batching import Piece, batches_by_length, pad_batch, pieces_for
from model.net.checkpoint import Checkpoint
from model.net.config import ModelConfig
from model.net.transformer import NEG_INF, InterestTransformer
from model.training.evaluate import validation_score


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are the ones every shipped result uses.

    ``refit``: after early stopping has chosen the number of epochs on validation, train
    again from the same initialisation on training *and* validation targets for that many
    epochs. The validation events are the most recent before the test ones; the test
    split is never touched. ``max_minutes`` bounds selection and refit together: selection
    stops before an epoch that would leave too little time to refit the best one so far
    (each epoch counted at the slowest so far, a refit epoch at that times its share of extra
    targets).
    """

    epochs: int = 200
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 10
    max_outputs: int = 200
    item_min_count: int = 2
    category_loss_weight: float = 1.0
    item_loss_weight: float = 1.0
    full_softmax_max_items: int = 50_000
    sampled_negatives: int = 2048
    max_minutes: float | None = None
    seed: int = 0
    refit: bool = True


@dataclass
class TrainResult:
    checkpoint: Checkpoint
    history: list[dict[str, float]]


def training_pieces(
    log: EventLog, split: SplitSpec, max_outputs: int, context: int, phases: tuple[int, ...] = (TRAIN,)
) -> list[Piece]:
    """Pieces whose outputs predict the events of ``phases`` (a prefix of each user)."""
    pieces = []
    for s, user in enumerate(log.users):
        n_targets = int(np.sum(np.isin(split.phases(user), phases)))
        pieces.extend(pieces_for(s, 0, n_targets - 1, max_outputs, context))
    return pieces


def _targets(tokens: Sequence[TokenSequence], pieces: Sequence[Piece], length: int) -> tuple[torch.Tensor, ...]:
    """Next-event category and item ids per input position, and the mask of wanted outputs."""
    categories = np.zeros((len(pieces), length), dtype=np.int64)
    items = np.zeros((len(pieces), length), dtype=np.int64)
    mask = np.zeros((len(pieces), length), dtype=bool)
    for row, piece in enumerate(pieces):
        seq = tokens[piece.sequence]
        n = piece.length
        categories[row, :n] = seq.categories[piece.input_start + 1 : piece.stop + 1]
        items[row, :n] = seq.items[piece.input_start + 1 : piece.stop + 1]
        mask[row, piece.first_output - piece.input_start : n] = True
    return torch.from_numpy(categories), torch.from_numpy(items), torch.from_numpy(mask)


def item_loss(
    model: InterestTransformer, hidden: torch.Tensor, targets: torch.Tensor, config: TrainConfig
) -> torch.Tensor:
    known = targets != OOV_ID
    hidden, targets = hidden[known], targets[known]
    if len(targets) == 0:
        return hidden.sum() * 0.0
    n_items = model.config.n_items
    if n_items <= config.full_softmax_max_items:
        logits = model.item_logits(hidden)
        logits[:, PAD_ID] = NEG_INF
        logits[:, OOV_ID] = NEG_INF
        return F.cross_entropy(logits, targets)
    negatives = torch.randint(OOV_ID + 1, n_items, (config.sampled_negatives,))
    positive = (hidden * model.item_embedding(targets)).sum(-1) + model.item_bias[targets]
    negative = model.item_logits(hidden, negatives).masked_fill(negatives[None, :] == targets[:, None], NEG_INF)
    logits = torch.cat([positive[:, None], negative], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long))


def run_epoch(
    model: InterestTransformer,
    optimizer: torch.optim.Optimizer,
    tokens: Sequence[TokenSequence],
    pieces: Sequence[Piece],
    config: TrainConfig,
    rng: np.random.Generator,
) -> float:
    """One pass over ``pieces``; returns the mean loss per predicted event."""
    model.train()
    total, count = 0.0, 0
    for group in batches_by_length(pieces, config.batch_size, rng):
        batch = pad_batch(tokens, group)
        category_targets, item_targets, mask = _targets(tokens, group, batch.shape[1])
        encoding = model.encode(batch)
        category_nll = -model.category_target_log_prob(encoding, category_targets, mask).mean()
        loss = config.category_loss_weight * category_nll + config.item_loss_weight * item_loss(
            model, encoding.hidden[mask], item_targets[mask], config
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * int(mask.sum())
        count += int(mask.sum())
    model.eval()
    return total / max(count, 1)


def train(
    log: EventLog,
    split: SplitSpec,
    model_config: dict[str, Any] | None = None,
    config: TrainConfig = TrainConfig(),
    progress: bool = True,
) -> TrainResult:
    """Train on ``log`` under ``split``; returns the checkpoint to test.

    Epochs run until validation NDCG@10 has not improved for ``patience`` epochs; the
    checkpoint is the best epoch's model, or with ``config.refit`` a model trained that
    many epochs on training and validation targets. Its ``metrics["validation"]`` are the
    best epoch's (measured before any refit).
    """
    tokenizer = Tokenizer.build(before_test(log, split), item_min_count=config.item_min_count)
    settings = replace(
        ModelConfig(n_items=len(tokenizer.items), n_categories=len(tokenizer.categories)), **(model_config or {})
    )
    tokens = [tokenizer.encode(user) for user in log.users]
    context = settings.receptive_field - 1
    pieces = training_pieces(log, split, config.max_outputs, context)
    if not pieces:
        raise ValueError(f"{log.name}: no training events under split {split}")
    torch.manual_seed(config.seed)
    model = InterestTransformer(settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    checkpoint = Checkpoint(
        model=model,
        tokenizer=tokenizer,
        split=split,
        dataset=log.name,
        data_format=log.format,
        training={**asdict(config), "n_train_pieces": len(pieces)},
    )
    history: list[dict[str, float]] = []
    best_score, best_state, best_epoch = -1.0, copy.deepcopy(model.state_dict()), 0
    refit_pieces = training_pieces(log, split, config.max_outputs, context, (TRAIN, VALIDATION)) if config.refit else []
    refit_share = len(refit_pieces) / len(pieces)  # a refit epoch's cost, in selection epochs
    started = time.monotonic()
    deadline = None if config.max_minutes is None else started + 60 * config.max_minutes
    slowest_epoch = 0.0
    bar = tqdm(range(1, config.epochs + 1), desc=f"train {log.name}", unit="epoch", disable=not progress)
    for epoch in bar:
        epoch_started = time.monotonic()
        loss = run_epoch(model, optimizer, tokens, pieces, config, rng)
        validation = validation_score(checkpoint, log, tokens)
        history.append({"epoch": epoch, "loss": round(loss, 5), **{f"val_{k}": v for k, v in validation.items()}})
        if validation["ndcg@10"] > best_score:
            best_score, best_state, best_epoch = validation["ndcg@10"], copy.deepcopy(model.state_dict()), epoch
        bar.set_postfix(loss=round(loss, 4), val_ndcg10=validation["ndcg@10"], best=best_epoch)
        slowest_epoch = max(slowest_epoch, time.monotonic() - epoch_started)
        # the next epoch, and a refit as long as the best one's after it, must end before the deadline
        needed = slowest_epoch * (1 + refit_share * best_epoch)
        out_of_time = deadline is not None and time.monotonic() + needed > deadline
        if epoch - best_epoch >= config.patience or out_of_time:
            break
    bar.close()
    model.load_state_dict(best_state)
    if config.refit:
        torch.manual_seed(config.seed)
        model.load_state_dict(InterestTransformer(settings).state_dict())
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        rng = np.random.default_rng(config.seed)
        for _ in tqdm(
            range(best_epoch), desc=f"refit {log.name} on train+validation", unit="epoch", disable=not progress
        ):
            run_epoch(model, optimizer, tokens, refit_pieces, config, rng)
    model.eval()
    checkpoint.training.update(
        {"best_epoch": best_epoch, "epochs_run": len(history), "seconds": round(time.monotonic() - started, 1)}
    )
    checkpoint.metrics = {"validation": {k[4:]: v for k, v in history[best_epoch - 1].items() if k.startswith("val_")}}
    return TrainResult(checkpoint, history)

"""The checkpoint format: a directory with ``weights.pt`` and ``checkpoint.json``.

``checkpoint.json`` holds the format version, the model config, the vocabularies, the
split and training settings, metrics, and ``model_version``: a content hash of weights,
config and vocabularies, so two checkpoints share a version only if they compute the same
function. Weights load with ``torch.load(weights_only=True)``; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.data.splits import SplitSpec
from model.data.vocab import Tokenizer
from model.net.config import ModelConfig
from model.net.transformer import InterestTransformer

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.pt"
META_FILE = "checkpoint.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or incompatible with this code."""


@dataclass
class Checkpoint:
    model: InterestTransformer
    tokenizer: Tokenizer
    split: SplitSpec
    dataset: str
    data_format: str
    training: dict[str, object] = field(default_factory=dict)
    metrics: dict[str, object] = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def model_version(self) -> str:
        return compute_model_version(self.model, self.tokenizer)


def _weights_bytes(model: InterestTransformer) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def compute_model_version(model: InterestTransformer, tokenizer: Tokenizer) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    digest.update(json.dumps(tokenizer.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def save_checkpoint(checkpoint: Checkpoint, directory: str | Path) -> str:
    """Write ``checkpoint`` into ``directory`` (created if needed); returns its model_version."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    version = checkpoint.model_version
    meta = {
        "format_version": FORMAT_VERSION,
        "model_version": version,
        "dataset": checkpoint.dataset,
        "data_format": checkpoint.data_format,
        "config": checkpoint.config.to_dict(),
        "split": checkpoint.split.to_dict(),
        "training": checkpoint.training,
        "metrics": checkpoint.metrics,
        "vocabularies": checkpoint.tokenizer.to_dict(),
    }
    # Write both files under temporary names first so a crash never leaves a torn pair.
    weights_tmp = directory / f".{WEIGHTS_FILE}.tmp"
    meta_tmp = directory / f".{META_FILE}.tmp"
    weights_tmp.write_bytes(_weights_bytes(checkpoint.model))
    meta_tmp.write_text(json.dumps(meta, indent=1))
    weights_tmp.replace(directory / WEIGHTS_FILE)
    meta_tmp.replace(directory / META_FILE)
    return version


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Load a checkpoint, raising :class:`CheckpointError` with the reason if it cannot."""
    directory = Path(directory)
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{directory}: not a checkpoint ({path.name} is missing)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{meta_path}: corrupt metadata ({error})") from error
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise CheckpointError(
            f"{directory}: checkpoint format {found!r} is not supported (this code reads format {FORMAT_VERSION})"
        )
    try:
        config = ModelConfig.from_dict(meta["config"])
        tokenizer = Tokenizer.from_dict(meta["vocabularies"])
        split = SplitSpec.from_dict(meta["split"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{meta_path}: incompatible metadata ({error})") from error
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(f"{weights_path}: corrupt weights ({type(error).__name__}: {error})") from error
    model = InterestTransformer(config)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{weights_path}: weights do not fit the config ({error})") from error
    model.eval()
    checkpoint = Checkpoint(
        model=model,
        tokenizer=tokenizer,
        split=split,
        dataset=meta.get("dataset", ""),
        data_format=meta.get("data_format", ""),
        training=meta.get("training", {}),
        metrics=meta.get("metrics", {}),
    )
    if checkpoint.model_version != meta.get("model_version"):
        raise CheckpointError(
            f"{directory}: content hash {checkpoint.model_version} does not match the recorded "
            f"model_version {meta.get('model_version')!r}; the files were modified or mixed up"
        )
    return checkpoint

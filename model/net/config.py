"""The one configuration dataclass of the interest model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ModelConfig:
    """Shape of :class:`model.net.transformer.InterestTransformer`.

    Every layer attends over a sliding window of ``window`` events (the event itself and
    the ``window - 1`` before it), so an output depends on at most
    :attr:`receptive_field` events, and a bounded per-user cache reproduces it exactly.

    >>> ModelConfig(n_items=100, n_categories=10, n_layers=2, window=50).receptive_field
    99
    """

    n_items: int
    n_categories: int
    n_behaviors: int = 7
    n_gap_buckets: int = 24
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    d_ff: int = 256
    window: int = 50
    copy_window: int = 50
    dropout: float = 0.2
    rope_base: float = 10_000.0

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError("d_model / n_heads must be an even integer (rotary pairs)")
        if self.window < 1 or self.copy_window < 1:
            raise ValueError("window and copy_window must be >= 1")
        if self.copy_window > self.receptive_field:
            raise ValueError("copy_window cannot exceed the receptive field")

    @property
    def receptive_field(self) -> int:
        """Events an output can depend on: ``n_layers * (window - 1) + 1``."""
        return self.n_layers * (self.window - 1) + 1

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)  # type: ignore[arg-type]

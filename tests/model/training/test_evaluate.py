from __future__ import annotations

import torch

from model.data.loaders import DirtyReport, EventLog, UserSequence
from model.data.splits import TEST, SplitSpec
from model.data.vocab import Tokenizer
from model.net.checkpoint import Checkpoint
from model.net.config import ModelConfig
from model.net.transformer import InterestTransformer
from model.training.evaluate import Protocol, evaluate_transformer


def test_a_category_unseen_in_training_can_still_be_predicted_by_copying() -> None:
    """'new' appears only in the test period; after one occurrence, copying ranks it first."""
    categories = ("a", "b", "a", "b", "new", "new")
    user = UserSequence("u", tuple(f"i{k}" for k in range(6)), categories, ("view",) * 6, (1, 2, 3, 4, 10, 11))
    log = EventLog("toy", "taobao", (user,), DirtyReport())
    split = SplitSpec("time", t1=3, t2=5)
    tokenizer = Tokenizer.build([user.head(4)], item_min_count=1)
    assert "new" not in tokenizer.categories
    config = ModelConfig(
        n_items=len(tokenizer.items),
        n_categories=len(tokenizer.categories),
        d_model=8,
        n_heads=2,
        d_ff=16,
        window=4,
        copy_window=4,
        dropout=0.0,
    )
    torch.manual_seed(0)
    model = InterestTransformer(config).eval()
    with torch.no_grad():
        model.copy_gate.bias.fill_(-50.0)  # copy only
        model.copy_recency.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0]))  # copy the last event
    checkpoint = Checkpoint(model, tokenizer, split, "toy", "taobao")
    result = evaluate_transformer(checkpoint, log, TEST, Protocol.for_split(split))
    # Event 4 ('new' after 'b') cannot be predicted; event 5 ('new' after 'new') ranks first.
    assert result.ranks.tolist() == [len(tokenizer.categories), 1]

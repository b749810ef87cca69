"""Markdown report with a bar plot for an evaluation result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.training.metrics import METRIC_NAMES


def markdown_table(models: dict[str, dict[str, float]]) -> str:
    lines = ["| model | " + " | ".join(METRIC_NAMES) + " |", "|---" * (len(METRIC_NAMES) + 1) + "|"]
    for name, metrics in sorted(models.items(), key=lambda kv: -kv[1]["ndcg@10"]):
        lines.append(f"| {name} | " + " | ".join(f"{metrics[m]:.4f}" for m in METRIC_NAMES) + " |")
    return "\n".join(lines)


def plot_models(models: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(models, key=lambda n: -models[n]["ndcg@10"])
    metrics = ["hr@1", "hr@5", "hr@10", "ndcg@10", "mrr"]
    width = 0.8 / len(names)
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for i, name in enumerate(names):
        positions = [m + i * width for m in range(len(metrics))]
        axes.bar(positions, [models[name][m] for m in metrics], width, label=name)
    axes.set_xticks([m + 0.4 - width / 2 for m in range(len(metrics))], metrics)
    axes.set_ylabel("score")
    axes.set_title(title)
    axes.legend(fontsize=8, ncols=3)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(result: dict[str, Any], path: Path) -> None:
    """Write ``path`` (Markdown) and ``path`` with a ``.png`` suffix (the plot)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_path = path.with_suffix(".png")
    models = result["models"]
    title = f"{result['dataset']}: {result['protocol']}"
    plot_models(models, plot_path, title)
    ci = result["ci95"]
    training = result.get("training", {})
    text = f"""# Evaluation: {title}

- model_version: `{result["model_version"]}`
- split: `{result["split"]}`
- predictions: {result["n_predictions"]:,} over {result["n_users"]:,} users
- training: best epoch {training.get("best_epoch")} of {training.get("epochs_run")}, {training.get("seconds")} s

{markdown_table(models)}

Transformer minus the best baseline (`{ci["versus"]}`) in {ci["metric"]}, 95% bootstrap
interval over users: **[{ci["low"]:+.4f}, {ci["high"]:+.4f}]**.

![metrics]({plot_path.name})

Data quality: `{result["data_quality"]}`
"""
    path.write_text(text)

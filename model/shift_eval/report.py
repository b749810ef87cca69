"""Markdown report and plots for ``shiftwatch detect-eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = ("precision", "recall", "f1", "median_delay", "mean_delay", "false_alarms_per_1k", "alarms")


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 100 else f"{value:.1f}"
    return str(value)


def results_table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| detector | " + " | ".join(COLUMNS) + " | tuned parameters |", "|---" * (len(COLUMNS) + 2) + "|"]
    for name, row in sorted(results.items(), key=lambda kv: -float(kv[1]["f1"])):
        params = ", ".join(f"{k}={v:g}" for k, v in row["params"].items()) or "none"
        lines.append(f"| {name} | " + " | ".join(_cell(row[c]) for c in COLUMNS) + f" | {params} |")
    return "\n".join(lines)


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_timeline(timeline: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(10, 4.2))
    for category, values in timeline["categories"].items():
        axes.plot(range(len(values)), values, label=f"category {category}", linewidth=1.6)
    for i, change in enumerate(timeline["change_points"]):
        axes.axvline(
            change, color="black", linestyle="--", linewidth=1.2, label="true change (splice)" if i == 0 else None
        )
    styles = {"transformer": ("tab:red", 1.0), "frequency_jsd": ("tab:gray", 0.55), "page_hinkley": ("tab:purple", 0.3)}
    for name, alarms in timeline["alarms"].items():
        color, height = styles.get(name, ("tab:olive", 0.2))
        axes.scatter(alarms, [height] * len(alarms), marker="v", s=70, color=color, label=f"{name} alarm", zorder=3)
    axes.set_xlabel("event")
    axes.set_ylabel("recent interest (transformer)")
    axes.set_ylim(0, 1.05)
    axes.set_title(f"{timeline['track']}: top categories over time")
    axes.legend(fontsize=7, ncols=3, loc="upper left")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_precision_recall(result: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    figure, panels = plt.subplots(1, 2, figsize=(10, 4.2))
    for axes, benchmark in zip(panels, ("spliced", "natural")):
        for name, row in result[benchmark].items():
            curve = sorted(row["pr_curve"], key=lambda p: p["recall"])
            if curve:
                axes.plot(
                    [p["recall"] for p in curve], [p["precision"] for p in curve], marker="o", markersize=3, label=name
                )
            else:
                axes.scatter([row["recall"]], [row["precision"]], marker="x", label=name)
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_xlim(0, 1.02)
        axes.set_ylim(0, 1.02)
        axes.set_title(f"{benchmark} (test users)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_detect_report(result: dict[str, Any], path: Path) -> None:
    """Write ``path`` (Markdown) and two PNG plots beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    timeline_png = path.with_name(path.stem + "_timeline.png")
    pr_png = path.with_name(path.stem + "_pr.png")
    plot_timeline(result["timeline"], timeline_png)
    plot_precision_recall(result, pr_png)
    settings = result["settings"]
    text = f"""# Interest-shift detection: {result["dataset"]}

- checkpoint `{result["checkpoint"]}`; a detection counts when it comes at most
  {settings["tolerance"]} events after the change point (and not before it).
- Parameters of every detector tuned for F1 on the validation users, scores on the test
  users (users split by a hash of their id). Regenerate: `make detect-eval`.
- The checkpoint may have trained on these users' events (it predicts next categories);
  no splice joins two histories it saw joined, and no detector saw a label.

## Spliced histories (known change points)

{_data_line(result["spliced_data"])}

{results_table(result["spliced"])}

## Natural labels (offline labeller, window {settings["natural_window"]}, JSD >= {settings["natural_threshold"]})

{_data_line(result["natural_data"])}

{results_table(result["natural"])}

## Precision-recall (test users; each detector's threshold swept, its other parameters as tuned)

![precision-recall]({pr_png.name})

## One spliced test history

The transformer's recent interest (its reading of the last {settings["detector"]["recent_events"]} events,
the detector's input) in the history's main categories after each event; the dashed line is the splice, the
triangles the alarms.

![timeline]({timeline_png.name})

## Confidence calibration

{_calibration_section(result.get("calibration"))}
"""
    path.write_text(text)


def _data_line(data: dict[str, dict[str, int]]) -> str:
    def describe(split: dict[str, int]) -> str:
        kinds = ", ".join(f"{v:,} {k}" for k, v in split.items() if k not in ("events", "change_points"))
        return f"{kinds}; {split['events']:,} events, {split['change_points']:,} change points"

    return f"Validation: {describe(data['validation'])}. Test: {describe(data['test'])}."


def _calibration_section(calibration: dict | None) -> str:
    if calibration is None:
        return "None: the tuned transformer detector raised no alarm on the validation users."
    test = calibration["test"]
    bins = "\n".join(
        f"| {b['bin'][0]:.1f}-{b['bin'][1]:.1f} | {b['alarms']} | {b['confidence']:.3f} | {b['observed']:.3f} |"
        for b in test["bins"]
    )
    return f"""Isotonic regression of "this alarm detected a change point" on the alarm's divergence,
fitted on the transformer detector's {calibration["curve"]["n_alarms"]} spliced validation alarms, checked on its
{test["alarms"]} test alarms: expected calibration error {test["ece"]:.3f}, Brier score {_cell(test["brier"])}.

| confidence | alarms | mean confidence | observed rate |
|---|---|---|---|
{bins}"""

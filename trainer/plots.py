"""Plots of runs, each written as a PNG: confusion matrices, training curves, α schedules,
t-SNE maps of embeddings, grouped bars (per-class recall, separability, layer weights) and
a sweep's UWA per setting.

Every function is usable on its own; each writes its PNG atomically and closes its figure.
matplotlib is imported only when a plot is drawn, with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from featurestore.atomic import atomic_write
from featurestore.errors import SermtlError
from trainer.tasks import alpha_at

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120


def _pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    try:
        import matplotlib
    except ImportError as error:
        raise SermtlError("plots need matplotlib: pip install 'sermtl[train]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG at ``path`` (creating its folder), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, dpi=DPI, format="png")
    _pyplot().close(figure)
    return path


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str) -> Path:
    """Confusion matrix (rows true, columns predicted) coloured by row fraction, annotated with counts."""
    plt = _pyplot()
    counts = [[int(c) for c in row] for row in matrix]
    fractions = [[c / sum(row) if sum(row) else 0.0 for c in row] for row in counts]
    size = 2.0 + 0.7 * len(labels)
    figure, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if fractions[i][j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    figure.colorbar(image, ax=ax, label="fraction of the true class")
    return _save(figure, path)


def plot_training_curves(
    histories: Sequence[Sequence[Mapping[str, Any]]],
    path: str | Path,
    title: str,
    labels: Sequence[str] | None = None,
    chosen: Sequence[int | None] | None = None,
) -> Path:
    """Training loss, validation loss, validation UWA and α per epoch, one line per fold
    (``history.json`` records), the epoch each fold kept (``chosen``) marked with a star.

    ``labels`` names the lines (default ``fold 1``, ``fold 2``, …). The validation-loss panel
    is drawn when the histories record it, the α panel when some α is non-zero (a multi-task
    run).
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    labels = list(labels) if labels is not None else [f"fold {i}" for i in range(1, len(histories) + 1)]
    chosen = list(chosen) if chosen is not None else [None] * len(histories)
    panels = [("train_loss", "train loss")]
    if any(_finite(record.get("valid_loss")) for history in histories for record in history):
        panels.append(("valid_loss", "valid loss"))
    panels.append(("valid_uwa", "valid UWA (%)"))
    if any(record.get("alpha") for history in histories for record in history):
        panels.append(("alpha", "α"))
    figure, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(7.0, 2.3 * len(panels) + 0.6), squeeze=False)
    for ax, (key, ylabel) in zip(axes[:, 0], panels):
        for history, label, best in zip(histories, labels, chosen):
            points = dict((r["epoch"], r[key]) for r in history if _finite(r.get(key)))
            if points:
                (line,) = ax.plot(list(points), list(points.values()), marker="o", markersize=3, label=label)
                if key == "valid_uwa" and best in points:
                    ax.plot(
                        [best],
                        [points[best]],
                        marker="*",
                        markersize=12,
                        color=line.get_color(),
                        markeredgecolor="black",
                        linestyle="none",
                    )
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("epoch")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_title(title + (" (★ the epoch kept)" if any(c is not None for c in chosen) else ""))
    if histories:
        axes[0, 0].legend(fontsize="small", ncol=min(len(histories), 5))
    return _save(figure, path)


def plot_embeddings(
    embeddings: np.ndarray, colourings: Mapping[str, Sequence[str]], path: str | Path, title: str, seed: int = 0
) -> Path:
    """A 2-D t-SNE map of ``embeddings`` (scikit-learn), one panel per colouring
    (``{"emotion": labels, "expression": labels}``), points coloured by label."""
    from sklearn.manifold import TSNE

    plt = _pyplot()
    points = np.asarray(embeddings, dtype=np.float64)
    points = points - points.mean(axis=0)
    scale = float(np.abs(points).max(initial=0.0))
    if not (math.isfinite(scale) and scale > 0):  # t-SNE's PCA start divides by zero and can crash the process
        raise ValueError("the embeddings are all the same point")
    points /= scale  # tiny differences, e.g. of 1e-300, kept apart
    perplexity = float(max(1.0, min(30.0, (len(points) - 1) / 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    figure, axes = plt.subplots(1, len(colourings), figsize=(4.6 * len(colourings), 4.2), squeeze=False)
    for ax, (name, labels) in zip(axes[0], colourings.items()):
        labels = np.asarray(labels, dtype=str)
        for label in sorted(set(labels)):
            chosen = labels == label
            ax.scatter(xy[chosen, 0], xy[chosen, 1], s=12, alpha=0.8, label=label)
        ax.set_title(f"by {name}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize="small", markerscale=1.5)
    figure.suptitle(title)
    return _save(figure, path)


def plot_alpha_schedule(alpha0: float, step: float, alpha_max: float, epochs: int, path: str | Path) -> Path:
    """The auxiliary-loss weight α per epoch, as :func:`trainer.tasks.alpha_at` gives it."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epoch_numbers = list(range(1, epochs + 1))
    figure, ax = plt.subplots(figsize=(6.0, 3.2))
    ax.plot(
        epoch_numbers,
        [alpha_at(e - 1, alpha0, step, alpha_max) for e in epoch_numbers],
        marker="o",
        markersize=3,
        drawstyle="steps-mid",
    )
    ax.axhline(alpha_max, color="grey", linestyle="--", linewidth=1, label=f"α_max = {alpha_max:g}")
    ax.set_ylim(0.0, 1.0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("α (auxiliary loss weight)")
    ax.set_title(f"α schedule: α0 = {alpha0:g}, +{step:g} per epoch, capped at {alpha_max:g}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(figure, path)


def _grouped_bars(
    ax: Axes,
    groups: Sequence[str],
    series: Sequence[tuple[str, Mapping[str, Any], bool]],
    reference_groups: Sequence[str] = (),
) -> None:
    """Bars of ``series`` (name, {group: value}, is_reference) side by side within each group.

    Bars of a reference series or in a ``reference_groups`` group are hatched; a missing or
    non-finite value leaves a gap.
    """
    width = 0.8 / max(len(series), 1)
    for k, (name, values, reference) in enumerate(series):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
        heights = [values.get(g) if _finite(values.get(g)) else math.nan for g in groups]
        bars = ax.bar(xs, heights, width, label=name)
        for bar, group in zip(bars, groups):
            if reference or group in reference_groups:
                bar.set(hatch="//", edgecolor="black", alpha=0.6)
    ax.set_xticks(range(len(groups)), groups)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")


def plot_bars(
    groups: Mapping[str, Mapping[str, float | None]], path: str | Path, title: str, ylabel: str = "%"
) -> Path:
    """Grouped bars: one group per key of ``groups``, one bar per series inside it; series
    whose name starts with ``paper`` are drawn hatched, as references."""
    plt = _pyplot()
    names = list(dict.fromkeys(name for values in groups.values() for name in values))
    series = [(name, {g: groups[g].get(name) for g in groups}, name.startswith("paper")) for name in names]
    figure, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) * max(len(names), 1) ** 0.5), 4.0))
    _grouped_bars(ax, list(groups), series)
    ax.tick_params(axis="x", labelrotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(figure, path)


def plot_sweep(summary: Mapping[str, Any], path: str | Path) -> Path:
    """UWA per setting of a sweep (:func:`trainer.sweep.summarise_sweep`): the mean over
    seeds with its 95 % interval, the baseline setting in grey."""
    bars = []  # read before a figure is opened, so that a summary of the wrong shape leaves none open
    for row in summary["settings"]:
        interval = row["uwa_interval"]
        mean = interval["mean"]
        error = [[mean - interval["ci"][0]], [interval["ci"][1] - mean]] if interval["ci"] else None
        bars.append((row["name"], mean, error, "grey" if row["paired_uwa"] is None else "tab:blue"))
    seeds = ", ".join(map(str, summary["seeds"]))
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(bars) + 2.0), 3.6))
    for x, (_, mean, error, colour) in enumerate(bars):
        ax.bar(x, mean, color=colour, alpha=0.8)
        if error is not None:
            ax.errorbar(x, mean, yerr=error, color="black", capsize=4)
    ax.set_xticks(range(len(bars)), [name for name, *_ in bars], rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("UWA (%)")
    ax.set_ylim(0.0, 100.0)  # a 95 % interval over two seeds can reach far past either end
    ax.set_title(f"UWA per setting: mean and 95 % interval\nover seeds {seeds}", fontsize="medium")
    return _save(figure, path)


def plot_per_class_recall(
    runs: Mapping[str, Mapping[str, float | None]],
    path: str | Path,
    reference: Mapping[str, Mapping[str, float | None]] | None = None,
) -> Path:
    """Grouped bars of per-class recall (percent), one bar per run within each class;
    ``reference`` (e.g. the paper's Table VI) adds hatched bars."""
    plt = _pyplot()
    series = [(name, v, False) for name, v in runs.items()] + [(name, v, True) for name, v in (reference or {}).items()]
    classes = list(dict.fromkeys(c for _, values, _ in series for c in values))
    figure, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(classes) * max(len(series), 1) ** 0.5), 4.0))
    _grouped_bars(ax, classes, series)
    ax.set_ylim(0.0, 100.0)
    ax.set_ylabel("recall (%)")
    ax.set_title("Per-class recall (mean over folds)")
    return _save(figure, path)


def plot_separability(
    values: Mapping[str, Mapping[str, float]],
    path: str | Path,
    reference: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Emotion and expression pattern separability per run, as bars (the paper's Fig. 2);
    ``reference`` runs are hatched. The y axis is logarithmic when the values span more
    than two orders of magnitude."""
    plt = _pyplot()
    everything = {**values, **(reference or {})}
    kinds = list(dict.fromkeys(k for v in everything.values() for k in v))
    series = [(kind, {name: v.get(kind) for name, v in everything.items()}, False) for kind in kinds]
    figure, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(everything)), 4.0))
    _grouped_bars(ax, list(everything), series, reference_groups=list(reference or {}))
    shown = [x for v in everything.values() for x in v.values() if _finite(x)]
    if shown and min(shown) > 0 and max(shown) / min(shown) > 100:
        ax.set_yscale("log")
    for container in ax.containers:
        ax.bar_label(container, fmt="%.2f", fontsize="x-small")
    ax.set_ylabel("pattern separability (mean Fisher ratio)")
    ax.set_title("Pattern separability of the embeddings")
    return _save(figure, path)

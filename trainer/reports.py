"""Reports of cross-validation runs: a markdown summary with PNG figures.

:func:`write_report` reads one or more run directories written by ``sermtl cv`` (see
:mod:`trainer.cv`) and writes ``report.md`` with a ``figures/`` folder beside it:

- a summary table (WA, UWA and aux accuracy as mean ± std over folds, pooled WA/UWA, and
  the paper's numbers beside ours when given),
- per-class recall, subset (e.g. acted vs spontaneous) and pattern-separability tables,
- per run: the per-fold table, the pooled confusion matrix, the training curves and, for a
  multi-task run, the α schedule,
- across runs: per-class recall and separability bar plots (the paper's Fig. 2 shape).

Every number of a run shown in the report is read from its ``results.json`` (whose
``folds`` list is the folds' ``metrics.json``) or, for an unfinished run without
``results.json``, averaged from the finished folds' ``metrics.json`` by
:func:`trainer.metrics.average_folds`, as ``sermtl cv`` does. Accuracies are in percent.

The plot functions are usable on their own; each writes a PNG and closes its figure.
matplotlib is imported only when a plot is drawn, with the non-interactive Agg backend.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from featurestore.atomic import atomic_write, write_text
from featurestore.errors import SermtlError, describe_error
from trainer.config import TrainConfig
from trainer.metrics import average_folds
from trainer.runfiles import (HISTORY, REPEATS, SWEEP, read_checked, read_embeddings, read_metrics, read_results,
                              read_run_config)
from trainer.tasks import alpha_at

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120
FIGURES = "figures"
_MISSING = "–"
_FOLD_DIR = re.compile(r"fold_(\d+)$")
#: The fewest distinct embeddings a t-SNE map is drawn of.
MIN_TSNE_POINTS = 5
_UNITS = ("Accuracies in percent. WA, UWA, aux accuracy, per-class recall, subsets and separability are means over "
          "folds (± population std over folds); pooled WA/UWA score all folds' test predictions as one set. "
          "See docs/metrics.md.")


# -- plots -------------------------------------------------------------------------------------
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


def _figure_line(plot: Callable[..., Path], alt: str, *args: Any, **kwargs: Any) -> str:
    """The Markdown image line of the figure ``plot(*args, **kwargs)`` draws. A figure that
    fails costs only itself: a warning, and a line saying so in its place."""
    try:
        path = plot(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- matplotlib or scikit-learn on data they cannot draw
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
        reason = describe_error(exc)
        warnings.warn(f"report: the {alt} figure was not drawn ({reason})", stacklevel=2)
        return f"*(The {alt} figure was not drawn: {reason}.)*"
    return f"![{alt}]({FIGURES}/{path.name})"


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


def plot_training_curves(histories: Sequence[Sequence[Mapping[str, Any]]], path: str | Path, title: str,
                         labels: Sequence[str] | None = None, chosen: Sequence[int | None] | None = None) -> Path:
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
                line, = ax.plot(list(points), list(points.values()), marker="o", markersize=3, label=label)
                if key == "valid_uwa" and best in points:
                    ax.plot([best], [points[best]], marker="*", markersize=12, color=line.get_color(),
                            markeredgecolor="black", linestyle="none")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("epoch")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_title(title + (" (★ the epoch kept)" if any(c is not None for c in chosen) else ""))
    if histories:
        axes[0, 0].legend(fontsize="small", ncol=min(len(histories), 5))
    return _save(figure, path)


def plot_embeddings(embeddings: np.ndarray, colourings: Mapping[str, Sequence[str]], path: str | Path,
                    title: str, seed: int = 0) -> Path:
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
    ax.plot(epoch_numbers, [alpha_at(e - 1, alpha0, step, alpha_max) for e in epoch_numbers], marker="o", markersize=3, drawstyle="steps-mid")
    ax.axhline(alpha_max, color="grey", linestyle="--", linewidth=1, label=f"α_max = {alpha_max:g}")
    ax.set_ylim(0.0, 1.0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("α (auxiliary loss weight)")
    ax.set_title(f"α schedule: α0 = {alpha0:g}, +{step:g} per epoch, capped at {alpha_max:g}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(figure, path)


def _grouped_bars(ax: Axes, groups: Sequence[str], series: Sequence[tuple[str, Mapping[str, Any], bool]],
                  reference_groups: Sequence[str] = ()) -> None:
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


def plot_bars(groups: Mapping[str, Mapping[str, float | None]], path: str | Path, title: str, ylabel: str = "%") -> Path:
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


def plot_per_class_recall(runs: Mapping[str, Mapping[str, float | None]], path: str | Path,
                          reference: Mapping[str, Mapping[str, float | None]] | None = None) -> Path:
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


def plot_separability(values: Mapping[str, Mapping[str, float]], path: str | Path,
                      reference: Mapping[str, Mapping[str, float]] | None = None) -> Path:
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


# -- markdown ----------------------------------------------------------------------------------
def _cell(value: Any, floatfmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _MISSING
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = ".2f") -> str:
    """A GitHub pipe table: floats formatted with ``floatfmt``, ``None`` and NaN as "–",
    ``|`` in a cell escaped. Ends without a newline."""
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)} has {len(row)} cells, the header has {len(header)}")
    lines = ["| " + " | ".join(_cell(h, floatfmt) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c, floatfmt) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _mean_std(mean: float | None, std: float | None) -> str | None:
    """``"50.00 ± 1.23"``; the mean alone without a std; ``None`` without a mean."""
    if mean is None:
        return None
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


# -- run directories ---------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """One run directory as the report sees it: ``config.json``, the results, the folds'
    histories by fold number, and whether the results were averaged here from the finished
    folds (``from_folds``: no ``results.json``)."""

    name: str
    path: Path
    config: dict[str, Any]
    results: dict[str, Any]
    histories: dict[int, list[dict[str, Any]]]
    from_folds: bool

    @property
    def uses_aux(self) -> bool:
        return self.config.get("train", {}).get("aux") not in (None, "", "none")

    @property
    def protocol(self) -> str:
        protocol = self.config.get("protocol") or {}
        name = protocol.get("name") or self.results.get("protocol") or "?"
        return f"{name} by {protocol['by']}" if protocol.get("by") else name


def _fold_dirs(path: Path) -> list[tuple[int, Path]]:
    """``(k, fold_k)`` of the finished folds (those with a ``metrics.json``), by k."""
    found = [(int(m.group(1)), p) for p in path.iterdir() if (m := _FOLD_DIR.match(p.name))]
    return sorted((k, p) for k, p in found if (p / "metrics.json").is_file())


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read a run directory: ``config.json``, ``results.json`` (or, when it is missing, the
    average of the finished folds' ``metrics.json``) and the folds' ``history.json``, each
    checked against its declared shape (:mod:`trainer.runfiles`), the training options
    against their ranges.

    Raises:
        SermtlError: ``path`` is not a run directory, no fold of it has finished, or a file
            of it is damaged.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise SermtlError(f"{path} is not a run directory of 'sermtl cv' (no config.json)")
    config = read_run_config(path / "config.json")
    TrainConfig.from_dict(config["train"], str(path / "config.json"))  # epochs, α… in their ranges
    folds = _fold_dirs(path)
    from_folds = not (path / "results.json").is_file()
    if not from_folds:
        results = read_results(path / "results.json")
    elif folds:
        per_fold = [read_metrics(d / "metrics.json") for _, d in folds]
        results = {"aux_accuracy": None, **average_folds(per_fold), "folds": per_fold,
                   "protocol": config["protocol"].get("name"), "aux": config["train"].get("aux"),
                   "store": config.get("store")}
    else:
        raise SermtlError(f"run directory {path} has no results.json and no finished fold (fold_*/metrics.json)")
    histories = {k: read_checked(d / "history.json", HISTORY) for k, d in folds if (d / "history.json").is_file()}
    return Run(name or path.resolve().name, path, config, results, histories, from_folds)


def _slug(name: str) -> str:
    """``name`` made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def _unique_names(names: Sequence[str]) -> list[str]:
    """``names`` with ``-2``, ``-3``… added where a name (or its file-name slug, which names
    the run's figures) repeats an earlier one."""
    unique: list[str] = []
    for base in names:
        name, k = base, 1
        while _slug(name) in {_slug(n) for n in unique}:
            k += 1
            name = f"{base}-{k}"
        unique.append(name)
    return unique


def _sweep_part(path: Path, figures: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """The runs and the summary section of a sweep directory."""
    from trainer.sweep import sweep_table

    summary = read_checked(path / "sweep.json", SWEEP)
    figure = _figure_line(plot_sweep, "sweep", summary, figures / f"{_slug(path.resolve().name)}_sweep.png")
    section = [f"## Sweep `{path}`", "", sweep_table(summary), "", figure, ""]
    return [(path / row["dir"] / f"seed_{seed}", f"{row['name']} seed {seed}")
            for row in summary["settings"] for seed in summary["seeds"]], section


def _repeats_part(path: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """The runs and the summary section of a ``cv --repeats`` directory."""
    summary = read_checked(path / "repeats.json", REPEATS)
    rows = [[seed, r["wa"], r["uwa"], r["pooled_uwa"]] for seed, r in summary["runs"].items()]
    rows.append(["mean ± std", *(_mean_std(summary[k]["mean"], summary[k]["std"]) for k in ("wa", "uwa", "pooled_uwa"))])
    section = [f"## Repeats `{path}`", "", markdown_table(["seed", "WA", "UWA", "pooled UWA"], rows), ""]
    return [(path / f"seed_{seed}", f"{path.resolve().name} seed {seed}") for seed in summary["seeds"]], section


def _expand(paths: Sequence[Path], figures: Path) -> tuple[list[Path], list[str], list[str]]:
    """The run directories to report on, their names, and summary sections: a sweep
    directory (``sweep.json``) stands for every setting and seed of it, a ``cv --repeats``
    directory (``repeats.json``) for every seed."""
    runs: list[tuple[Path, str]] = []
    sections: list[str] = []
    for path in paths:
        if (path / "sweep.json").is_file():
            found, section = _sweep_part(path, figures)
        elif (path / "repeats.json").is_file():
            found, section = _repeats_part(path)
        else:
            runs.append((path, path.resolve().name))
            continue
        runs += found
        sections += section
    return [p for p, _ in runs], _unique_names([n for _, n in runs]), sections


def _paper_key(paper: Mapping[str, Any] | None, run: Run) -> str | None:
    """The key of the paper's row for ``run``: the run's name, else its aux task; None if neither."""
    rows = (paper or {}).get("rows", {})
    return next((key for key in (run.name, str(run.config.get("train", {}).get("aux"))) if key in rows), None)


def _summary_section(runs: Sequence[Run], paper: Mapping[str, Any] | None) -> list[str]:
    header = ["run", "store", "protocol", "aux", "folds", "WA", "UWA", "aux accuracy", "pooled WA", "pooled UWA"]
    rows = []
    for run in runs:
        r, std, pooled = run.results, run.results.get("std") or {}, run.results.get("pooled") or {}
        store = r.get("store") or run.config.get("store")
        rows.append([run.name, Path(store).name if store else None, run.protocol, r.get("aux"), len(r.get("folds", [])),
                     _mean_std(r.get("wa"), std.get("wa")), _mean_std(r.get("uwa"), std.get("uwa")),
                     _mean_std(r.get("aux_accuracy"), std.get("aux_accuracy")), pooled.get("wa"), pooled.get("uwa")])
    if not paper:
        return ["## Summary", "", markdown_table(header, rows), ""]
    paper_rows = paper.get("rows", {})
    keys = [_paper_key(paper, run) for run in runs]
    for row, key in zip(rows, keys):
        row += [paper_rows[key].get("wa"), paper_rows[key].get("uwa")] if key else [None, None]
    lines = ["## Summary", "", markdown_table([*header, "paper WA", "paper UWA"], rows), "",
             f"Paper: {paper.get('title', 'reference')} (its rows matched by run name, else by aux task).", ""]
    unmatched = [key for key in paper_rows if key not in keys]
    if unmatched:
        lines += [f"Paper rows without a matching run: {', '.join(unmatched)}.", ""]
    return lines


def _per_class_section(runs: Sequence[Run], figure: str) -> list[str]:
    classes = list(dict.fromkeys(c for run in runs for c in run.results.get("per_class_recall") or {}))
    rows = [[run.name, *((run.results.get("per_class_recall") or {}).get(c) for c in classes)] for run in runs]
    return ["## Per-class recall (%, mean over folds)", "", markdown_table(["run", *classes], rows), "",
            figure, ""]


def _subset_section(runs: Sequence[Run]) -> list[str]:
    rows = []
    for run in runs:
        std = (run.results.get("std") or {}).get("subsets") or {}
        for column, values in (run.results.get("subsets") or {}).items():
            for value, mean in values.items():
                spread = (std.get(column) or {}).get(value) or {}
                cells = [_mean_std(mean.get(k), spread.get(k)) for k in ("wa", "uwa", "aux_accuracy")]
                rows.append([run.name, column, value, *cells])
    if not rows:
        return []
    return ["## Subsets of the test sets (%, mean ± std over folds)", "",
            markdown_table(["run", "column", "value", "WA", "UWA", "aux accuracy"], rows), ""]


def _separability_section(runs: Sequence[Run], figure: str) -> list[str]:
    kinds = list(dict.fromkeys(k for run in runs for k in run.results.get("separability") or {}))
    rows = [[run.name, *(_mean_std((run.results.get("separability") or {}).get(k),
                                   ((run.results.get("std") or {}).get("separability") or {}).get(k)) for k in kinds)]
            for run in runs]
    return ["## Pattern separability (mean ± std over folds)", "", markdown_table(["run", *kinds], rows), "",
            figure, ""]


def _fold_table(run: Run) -> str:
    folds = run.results.get("folds", [])
    averaged = any(f.get("averaged_epochs") for f in folds)  # a run with --average-best K > 1
    rows = [[f.get("fold"), f.get("n"), f.get("wa"), f.get("uwa"), f.get("aux_accuracy"), f.get("best_epoch"),
             f.get("best_valid_uwa"), *([", ".join(map(str, f.get("averaged_epochs") or []))] if averaged else [])]
            for f in folds]
    header = ["fold", "test n", "WA", "UWA", "aux accuracy", "best epoch", "best valid UWA"]
    return markdown_table(header + (["averaged epochs"] if averaged else []), rows)


def _run_section(run: Run, figures: Path) -> list[str]:
    """Per-fold table, pooled confusion matrix and training figures of one run."""
    slug, train = _slug(run.name), run.config.get("train", {})
    setup = (f"`{run.path}`: store `{run.config.get('store')}`, protocol {run.protocol}, aux `{train.get('aux')}`, "
             f"{train.get('epochs')} epochs, batch size {train.get('batch_size')}, lr {train.get('lr')}, "
             f"seed {train.get('seed')}.")
    lines = [f"## Run `{run.name}`", "", setup, ""]
    if run.from_folds:
        lines += ["No results.json (unfinished run): the averages are over the finished folds' metrics.json.", ""]
    lines += ["### Per fold (%)", "", _fold_table(run), ""]
    pooled, labels = run.results.get("pooled") or {}, run.results.get("labels", [])
    if pooled.get("confusion"):
        figure = _figure_line(plot_confusion, "confusion", pooled["confusion"], labels, figures / f"{slug}_confusion.png",
                              f"{run.name}: confusion, all folds pooled")
        rows = [[label, *counts] for label, counts in zip(labels, pooled["confusion"])]
        lines += ["### Confusion matrix (all folds pooled; rows true, columns predicted)", "",
                  markdown_table(["true \\ predicted", *labels], rows), "", figure, ""]
    training = []
    if run.histories:
        best = {f.get("fold"): f.get("best_epoch") for f in run.results.get("folds", []) if isinstance(f, dict)}
        training += [_figure_line(plot_training_curves, "training curves", list(run.histories.values()),
                                  figures / f"{slug}_training.png", f"{run.name}: training",
                                  labels=[f"fold {k}" for k in run.histories], chosen=[best.get(k) for k in run.histories]), ""]
    if run.uses_aux and {"alpha0", "alpha_step", "alpha_max", "epochs"} <= set(train):
        training += [_figure_line(plot_alpha_schedule, "alpha schedule", train["alpha0"], train["alpha_step"],
                                  train["alpha_max"], train["epochs"], figures / f"{slug}_alpha.png"), ""]
    if training:
        lines += ["### Training", "", *training]
    lines += _embedding_section(run, figures, slug)
    lines += _layer_weight_section(run, figures, slug)
    return lines


def learned_layer_weights(run_path: Path) -> tuple[list[str], list[list[float]]]:
    """The softmax layer weights each finished fold of a ``--layer weighted`` run learned
    (from its checkpoint), and the stored layers' names (``hidden state k``)."""
    from trainer.checkpoint import load_checkpoint

    names: list[str] = []
    weights = []
    for _, fold_dir in _fold_dirs(run_path):
        if not (fold_dir / "checkpoint.pt").is_file():
            continue
        checkpoint = load_checkpoint(fold_dir / "checkpoint.pt")
        logits = checkpoint["state_dict"].get("layer_sum.logits")
        if logits is None:
            continue
        weights.append(logits.float().softmax(dim=0).tolist())
        layers = (checkpoint.get("feature") or {}).get("layers") or range(len(weights[-1]))
        names = [f"hidden state {k}" for k in layers]
    return names, weights


def _layer_weight_section(run: Run, figures: Path, slug: str) -> list[str]:
    """The learned layer weights of a ``--layer weighted`` run, per fold and on average."""
    if run.config.get("train", {}).get("layer") != "weighted":
        return []
    names, weights = learned_layer_weights(run.path)
    if not weights:
        return []
    mean = np.mean(weights, axis=0)
    groups = {name: {"mean over folds": float(value)} for name, value in zip(names, mean)}
    figure = _figure_line(plot_bars, "layer weights", groups, figures / f"{slug}_layers.png",
                          f"{run.name}: learned layer weights", ylabel="weight")
    rows = [[layer, *[w[i] for w in weights], mean[i]] for i, layer in enumerate(names)]
    header = ["layer", *[f"fold {k}" for k, d in _fold_dirs(run.path) if (d / "checkpoint.pt").is_file()], "mean"]
    return ["### Learned layer weights (`--layer weighted`)", "", markdown_table(header, rows, floatfmt=".3f"), "",
            figure, ""]


def _embedding_section(run: Run, figures: Path, slug: str) -> list[str]:
    """A t-SNE map of the first fold's test embeddings (``embeddings.npz``), by emotion and
    by the auxiliary label; nothing for runs without saved embeddings, a note instead of the
    map when they hold fewer than :data:`MIN_TSNE_POINTS` distinct points (t-SNE cannot place
    them, and scikit-learn's can crash the process on identical points)."""
    found = next(((k, d / "embeddings.npz") for k, d in _fold_dirs(run.path) if (d / "embeddings.npz").is_file()), None)
    if found is None:
        return []
    fold, path = found
    arrays = read_embeddings(path)
    distinct = len(np.unique(arrays["embeddings"], axis=0))
    if distinct < MIN_TSNE_POINTS:
        return ["### Embeddings", "", f"No t-SNE map: fold {fold}'s test embeddings hold {distinct} distinct point(s), "
                f"fewer than {MIN_TSNE_POINTS}.", ""]
    colourings = {"emotion": arrays["emotion"]}
    if "aux" in arrays:
        colourings[str(run.config.get("train", {}).get("aux", "aux"))] = arrays["aux"]
    figure = _figure_line(plot_embeddings, "t-SNE", arrays["embeddings"], colourings, figures / f"{slug}_tsne.png",
                          f"{run.name}: fold {fold} test embeddings (t-SNE)")
    return ["### Embeddings", "", f"t-SNE of fold {fold}'s test-utterance emotion embeddings "
            f"({len(arrays['embeddings'])} utterances; each fold's model has its own embedding space).", "",
            figure, ""]


def _paper_reference(paper: Mapping[str, Any] | None, key: str) -> dict[str, dict] | None:
    """``{"paper: <row>": row[key]}`` for the paper rows that give ``key``, or None."""
    rows = (paper or {}).get("rows", {})
    return {f"paper: {name}": row[key] for name, row in rows.items() if isinstance(row.get(key), dict)} or None


# -- the report --------------------------------------------------------------------------------
def write_report(run_dirs: Sequence[str | Path], out: str | Path | None = None,
                 paper: Mapping[str, Any] | None = None) -> Path:
    """Write ``report.md`` and its ``figures/`` for the runs in ``run_dirs``.

    Args:
        run_dirs: run directories of ``sermtl cv`` (each run named by its directory name),
            ``cv --repeats`` directories (their seeds' runs, and a table over seeds) or
            ``sermtl sweep`` directories (every setting and seed, and the sweep's table).
        out: folder for ``report.md`` and ``figures/``; default the run directory when
            there is one run (required for several).
        paper: ``{"title": str, "rows": {run name or aux task: {"wa": x, "uwa": y, ...}}}``:
            the paper's WA/UWA are shown beside ours; a row's ``per_class_recall`` and
            ``separability`` dicts, when given, are drawn as reference bars.

    Returns:
        The path of ``report.md``.

    Raises:
        SermtlError: a directory is not a run, or several runs and no ``out``.
    """
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise SermtlError("no run directory to report on")
    if out is None and len(paths) > 1:
        raise SermtlError(f"a report of {len(paths)} runs needs an output folder (--out)")
    folder = Path(out) if out is not None else paths[0]
    figures = folder / FIGURES
    folder.mkdir(parents=True, exist_ok=True)
    paths, names, sections = _expand(paths, figures)
    runs = [load_run(p, name) for p, name in zip(paths, names)]

    recall = _figure_line(plot_per_class_recall, "per-class recall",
                          {r.name: r.results.get("per_class_recall") or {} for r in runs},
                          figures / "per_class_recall.png", _paper_reference(paper, "per_class_recall"))
    lines = ["# sermtl report", "", f"Runs: {', '.join(f'`{r.name}` ({r.path})' for r in runs)}.", "", _UNITS, ""]
    lines += sections
    lines += _summary_section(runs, paper)
    lines += _per_class_section(runs, recall)
    lines += _subset_section(runs)
    separability = {r.name: r.results["separability"] for r in runs if r.results.get("separability")}
    if separability:
        figure = _figure_line(plot_separability, "pattern separability", separability, figures / "separability.png",
                              _paper_reference(paper, "separability"))
        lines += _separability_section(runs, figure)
    for run in runs:
        lines += _run_section(run, figures)
    report = folder / "report.md"
    write_text(report, "\n".join(lines))
    return report

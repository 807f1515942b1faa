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

The runs are read by :mod:`trainer.runs`, drawn by :mod:`trainer.plots` and tabulated by
:mod:`trainer.tables`; a figure that fails costs only itself (a warning and a note).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.atomic import write_text
from featurestore.errors import RunError, describe_error
from featurestore.options import option
from featurestore.store.fusion import store_name
from trainer.plots import (
    plot_alpha_schedule,
    plot_bars,
    plot_confusion,
    plot_embeddings,
    plot_per_class_recall,
    plot_separability,
    plot_sweep,
    plot_training_curves,
)
from trainer.runfiles import REPEATS, SWEEP, read_checked, read_embeddings, read_paper
from trainer.runs import Run, fold_dirs, learned_layer_weights, load_run
from trainer.tables import markdown_table, mean_std

FIGURES = "figures"
#: The fewest distinct embeddings a t-SNE map is drawn of.
MIN_TSNE_POINTS = 5
_UNITS = (
    "Accuracies in percent. WA, UWA, aux accuracy, per-class recall, subsets and separability are means over "
    "folds (± population std over folds); pooled WA/UWA score all folds' test predictions as one set. "
    "See docs/metrics.md."
)


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
    return [
        (path / row["dir"] / f"seed_{seed}", f"{row['name']} seed {seed}")
        for row in summary["settings"]
        for seed in summary["seeds"]
    ], section


def _repeats_part(path: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """The runs and the summary section of a ``cv --repeats`` directory."""
    summary = read_checked(path / "repeats.json", REPEATS)
    rows = [[seed, r["wa"], r["uwa"], r["pooled_uwa"]] for seed, r in summary["runs"].items()]
    rows.append(["mean ± std", *(mean_std(summary[k]["mean"], summary[k]["std"]) for k in ("wa", "uwa", "pooled_uwa"))])
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
        rows.append(
            [
                run.name,
                store_name(store) if store else None,
                run.protocol,
                r.get("aux"),
                len(r.get("folds", [])),
                mean_std(r.get("wa"), std.get("wa")),
                mean_std(r.get("uwa"), std.get("uwa")),
                mean_std(r.get("aux_accuracy"), std.get("aux_accuracy")),
                pooled.get("wa"),
                pooled.get("uwa"),
            ]
        )
    if not paper:
        return ["## Summary", "", markdown_table(header, rows), ""]
    paper_rows = paper.get("rows", {})
    keys = [_paper_key(paper, run) for run in runs]
    for row, key in zip(rows, keys):
        row += [paper_rows[key].get("wa"), paper_rows[key].get("uwa")] if key else [None, None]
    lines = [
        "## Summary",
        "",
        markdown_table([*header, "paper WA", "paper UWA"], rows),
        "",
        f"Paper: {paper.get('title', 'reference')} (its rows matched by run name, else by aux task).",
        "",
    ]
    unmatched = [key for key in paper_rows if key not in keys]
    if unmatched:
        lines += [f"Paper rows without a matching run: {', '.join(unmatched)}.", ""]
    return lines


def _per_class_section(runs: Sequence[Run], figure: str) -> list[str]:
    classes = list(dict.fromkeys(c for run in runs for c in run.results.get("per_class_recall") or {}))
    rows = [[run.name, *((run.results.get("per_class_recall") or {}).get(c) for c in classes)] for run in runs]
    return ["## Per-class recall (%, mean over folds)", "", markdown_table(["run", *classes], rows), "", figure, ""]


def _subset_section(runs: Sequence[Run]) -> list[str]:
    rows = []
    for run in runs:
        std = (run.results.get("std") or {}).get("subsets") or {}
        for column, values in (run.results.get("subsets") or {}).items():
            for value, mean in values.items():
                spread = (std.get(column) or {}).get(value) or {}
                cells = [mean_std(mean.get(k), spread.get(k)) for k in ("wa", "uwa", "aux_accuracy")]
                rows.append([run.name, column, value, *cells])
    if not rows:
        return []
    return [
        "## Subsets of the test sets (%, mean ± std over folds)",
        "",
        markdown_table(["run", "column", "value", "WA", "UWA", "aux accuracy"], rows),
        "",
    ]


def _separability_section(runs: Sequence[Run], figure: str) -> list[str]:
    kinds = list(dict.fromkeys(k for run in runs for k in run.results.get("separability") or {}))
    rows = [
        [
            run.name,
            *(
                mean_std(
                    (run.results.get("separability") or {}).get(k),
                    ((run.results.get("std") or {}).get("separability") or {}).get(k),
                )
                for k in kinds
            ),
        ]
        for run in runs
    ]
    return [
        "## Pattern separability (mean ± std over folds)",
        "",
        markdown_table(["run", *kinds], rows),
        "",
        figure,
        "",
    ]


def _fold_table(run: Run) -> str:
    folds = run.results.get("folds", [])
    averaged = any(f.get("averaged_epochs") for f in folds)  # a run with --average-best K > 1
    rows = [
        [
            f.get("fold"),
            f.get("n"),
            f.get("wa"),
            f.get("uwa"),
            f.get("aux_accuracy"),
            f.get("best_epoch"),
            f.get("best_valid_uwa"),
            *([", ".join(map(str, f.get("averaged_epochs") or []))] if averaged else []),
        ]
        for f in folds
    ]
    header = ["fold", "test n", "WA", "UWA", "aux accuracy", "best epoch", "best valid UWA"]
    return markdown_table(header + (["averaged epochs"] if averaged else []), rows)


def _run_section(run: Run, figures: Path) -> list[str]:
    """Per-fold table, pooled confusion matrix and training figures of one run."""
    slug, train = _slug(run.name), run.config.get("train", {})
    setup = (
        f"`{run.path}`: store `{run.config.get('store')}`, protocol {run.protocol}, aux `{train.get('aux')}`, "
        f"{train.get('epochs')} epochs, batch size {train.get('batch_size')}, lr {train.get('lr')}, "
        f"seed {train.get('seed')}."
    )
    lines = [f"## Run `{run.name}`", "", setup, ""]
    if run.from_folds:
        lines += ["No results.json (unfinished run): the averages are over the finished folds' metrics.json.", ""]
    lines += ["### Per fold (%)", "", _fold_table(run), ""]
    pooled, labels = run.results.get("pooled") or {}, run.results.get("labels", [])
    if pooled.get("confusion"):
        figure = _figure_line(
            plot_confusion,
            "confusion",
            pooled["confusion"],
            labels,
            figures / f"{slug}_confusion.png",
            f"{run.name}: confusion, all folds pooled",
        )
        rows = [[label, *counts] for label, counts in zip(labels, pooled["confusion"])]
        lines += [
            "### Confusion matrix (all folds pooled; rows true, columns predicted)",
            "",
            markdown_table(["true \\ predicted", *labels], rows),
            "",
            figure,
            "",
        ]
    training = []
    if run.histories:
        best = {f.get("fold"): f.get("best_epoch") for f in run.results.get("folds", []) if isinstance(f, dict)}
        training += [
            _figure_line(
                plot_training_curves,
                "training curves",
                list(run.histories.values()),
                figures / f"{slug}_training.png",
                f"{run.name}: training",
                labels=[f"fold {k}" for k in run.histories],
                chosen=[best.get(k) for k in run.histories],
            ),
            "",
        ]
    if run.uses_aux and {"alpha0", "alpha_step", "alpha_max", "epochs"} <= set(train):
        training += [
            _figure_line(
                plot_alpha_schedule,
                "alpha schedule",
                train["alpha0"],
                train["alpha_step"],
                train["alpha_max"],
                train["epochs"],
                figures / f"{slug}_alpha.png",
            ),
            "",
        ]
    if training:
        lines += ["### Training", "", *training]
    lines += _embedding_section(run, figures, slug)
    lines += _layer_weight_section(run, figures, slug)
    return lines


def _layer_weight_section(run: Run, figures: Path, slug: str) -> list[str]:
    """The learned layer weights of a ``--layer weighted`` run, per fold and on average."""
    if run.config.get("train", {}).get("layer") != "weighted":
        return []
    names, weights = learned_layer_weights(run.path)
    if not weights:
        return []
    mean = np.mean(weights, axis=0)
    groups = {name: {"mean over folds": float(value)} for name, value in zip(names, mean)}
    figure = _figure_line(
        plot_bars,
        "layer weights",
        groups,
        figures / f"{slug}_layers.png",
        f"{run.name}: learned layer weights",
        ylabel="weight",
    )
    rows = [[layer, *[w[i] for w in weights], mean[i]] for i, layer in enumerate(names)]
    header = ["layer", *[f"fold {k}" for k, d in fold_dirs(run.path) if (d / "checkpoint.pt").is_file()], "mean"]
    return [
        "### Learned layer weights (`--layer weighted`)",
        "",
        markdown_table(header, rows, floatfmt=".3f"),
        "",
        figure,
        "",
    ]


def _embedding_section(run: Run, figures: Path, slug: str) -> list[str]:
    """A t-SNE map of the first fold's test embeddings (``embeddings.npz``), by emotion and
    by the auxiliary label; nothing for runs without saved embeddings, a note instead of the
    map when they hold fewer than :data:`MIN_TSNE_POINTS` distinct points (t-SNE cannot place
    them, and scikit-learn's can crash the process on identical points)."""
    found = next(((k, d / "embeddings.npz") for k, d in fold_dirs(run.path) if (d / "embeddings.npz").is_file()), None)
    if found is None:
        return []
    fold, path = found
    arrays = read_embeddings(path)
    distinct = len(np.unique(arrays["embeddings"], axis=0))
    if distinct < MIN_TSNE_POINTS:
        return [
            "### Embeddings",
            "",
            f"No t-SNE map: fold {fold}'s test embeddings hold {distinct} distinct point(s), "
            f"fewer than {MIN_TSNE_POINTS}.",
            "",
        ]
    colourings = {"emotion": arrays["emotion"]}
    if "aux" in arrays:
        colourings[str(run.config.get("train", {}).get("aux", "aux"))] = arrays["aux"]
    figure = _figure_line(
        plot_embeddings,
        "t-SNE",
        arrays["embeddings"],
        colourings,
        figures / f"{slug}_tsne.png",
        f"{run.name}: fold {fold} test embeddings (t-SNE)",
    )
    return [
        "### Embeddings",
        "",
        f"t-SNE of fold {fold}'s test-utterance emotion embeddings "
        f"({len(arrays['embeddings'])} utterances; each fold's model has its own embedding space).",
        "",
        figure,
        "",
    ]


def _paper_reference(paper: Mapping[str, Any] | None, key: str) -> dict[str, dict] | None:
    """``{"paper: <row>": row[key]}`` for the paper rows that give ``key``, or None."""
    rows = (paper or {}).get("rows", {})
    return {f"paper: {name}": row[key] for name, row in rows.items() if isinstance(row.get(key), dict)} or None


# -- the report --------------------------------------------------------------------------------
def write_report(
    run_dirs: Sequence[str | Path], out: str | Path | None = None, paper: Mapping[str, Any] | None = None
) -> Path:
    """Write ``report.md`` and its ``figures/`` for the runs in ``run_dirs``.

    Parameters
    ----------
    run_dirs : sequence of paths
        Run directories of ``sermtl cv`` (each run named by its directory name),
        ``cv --repeats`` directories (their seeds' runs, and a table over seeds) or
        ``sermtl sweep`` directories (every setting and seed, and the sweep's table).
    out : path, optional
        Folder for ``report.md`` and ``figures/``; default the run directory when there is
        one run (required for several).
    paper : mapping, optional
        ``{"title": str, "rows": {run name or aux task: {"wa": x, "uwa": y, ...}}}``: the
        paper's WA/UWA are shown beside ours; a row's ``per_class_recall`` and
        ``separability`` dicts, when given, are drawn as reference bars.

    Returns
    -------
    Path
        The path of ``report.md``.

    Raises
    ------
    RunError
        A directory is not a run, or several runs and no ``out``.
    """
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise RunError("no run directory to report on")
    if out is None and len(paths) > 1:
        raise RunError(f"a report of {len(paths)} runs needs an output folder (--out)")
    folder = Path(out) if out is not None else paths[0]
    figures = folder / FIGURES
    folder.mkdir(parents=True, exist_ok=True)
    paths, names, sections = _expand(paths, figures)
    runs = [load_run(p, name) for p, name in zip(paths, names)]

    recall = _figure_line(
        plot_per_class_recall,
        "per-class recall",
        {r.name: r.results.get("per_class_recall") or {} for r in runs},
        figures / "per_class_recall.png",
        _paper_reference(paper, "per_class_recall"),
    )
    lines = ["# sermtl report", "", f"Runs: {', '.join(f'`{r.name}` ({r.path})' for r in runs)}.", "", _UNITS, ""]
    lines += sections
    lines += _summary_section(runs, paper)
    lines += _per_class_section(runs, recall)
    lines += _subset_section(runs)
    separability = {r.name: r.results["separability"] for r in runs if r.results.get("separability")}
    if separability:
        figure = _figure_line(
            plot_separability,
            "pattern separability",
            separability,
            figures / "separability.png",
            _paper_reference(paper, "separability"),
        )
        lines += _separability_section(runs, figure)
    for run in runs:
        lines += _run_section(run, figures)
    report = folder / "report.md"
    write_text(report, "\n".join(lines))
    return report


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """Where ``sermtl report`` writes and what it shows beside the runs (declared options)."""

    out: str | None = option(
        None, "Report folder (needed for several runs; default: the run's own folder).", path="dir"
    )
    paper: str | None = option(
        None, 'JSON {"title": …, "rows": {run: {"wa": …, "uwa": …}}} shown beside ours.', path="file"
    )


def report_runs(run_dirs: Sequence[str | Path], options: ReportOptions) -> Path:
    """``sermtl report``: :func:`write_report` with the ``--paper`` file read and checked."""
    return write_report(run_dirs, options.out, read_paper(options.paper) if options.paper else None)

"""Paired comparison of finished runs: ``sermtl compare BASELINE RUN…``.

A run is a ``cv`` directory (``config.json``, ``folds.json``, ``fold_<k>/metrics.json``), a
folder of them, one per seed (``cv --repeats``, a sweep's setting folder), the JSON file
of ``sermtl baseline --out`` (the SVM on the folds of the same seeds), or the
``ensemble.json`` of ``cv --repeats`` (the seeds' mean probabilities, scored on each seed's
folds: :mod:`trainer.ensembles`; its folder, given instead, is the seeds' runs). Two runs are
paired by (seed, fold), and only where both folds test the same utterances, so runs from
different sweeps, code versions or protocol options that share their test folds (e.g.
``--valid-fraction 0`` against the default, which moves only validation rows) compare
fold by fold, and runs whose test folds differ are refused in one line. Each run is
summarised as the mean ± std over seeds of its mean over folds (``numpy.std``, as ``cv
--repeats`` and ``sweep`` do) and, against the baseline, the mean paired difference with
its 95 % interval and Wilcoxon p-value (:func:`trainer.stats.paired_over_keys`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featurestore.errors import ConfigError, RunError
from featurestore.options import option
from featurestore.schema import check
from trainer.folds import load_folds, natural_key, test_digest
from trainer.runfiles import ENSEMBLE, RESULTS, SVM_RESULTS, read_checked, read_metrics, read_run_config
from trainer.stats import paired_cells, paired_over_keys
from trainer.tables import markdown_table

Pair = tuple[int, int]


def cv_runs(path: Path) -> list[Path]:
    """``path`` itself when it is a ``cv`` run, else its ``seed_*`` runs."""
    if (path / "folds.json").is_file():
        return [path]
    runs = sorted((p for p in path.glob("seed_*") if (p / "folds.json").is_file()), key=lambda p: natural_key(p.name))
    if not runs:
        raise RunError(f"{path}: neither a cv run (no folds.json) nor a folder of seed_* runs")
    return runs


class FoldScores:
    """``metric`` per (seed, fold) of one run, with each fold's :func:`~trainer.folds.test_digest`."""

    def __init__(self, source: Path, metric: str) -> None:
        self.source, self.metric = source, metric
        self.values: dict[Pair, float] = {}
        self.tests: dict[Pair, str] = {}

    def add(self, seed: Any, fold: Any, value: Any, digest: Any, where: Path) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not isinstance(digest, str):
            raise RunError(f"{where}: no seed or test-fold digest (made by an older sermtl? run it again)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(
                f"--metric {self.metric}: {where} holds no number of that name (e.g. wa, uwa, aux_accuracy)"
            )
        if (seed, fold) in self.values:
            raise RunError(f"{self.source}: seed {seed} fold {fold} appears twice")
        self.values[(seed, fold)] = float(value)
        self.tests[(seed, fold)] = digest


def _file_results(path: Path) -> list[dict[str, Any]]:
    """Each seed's results in ``sermtl baseline --out`` JSON (one seed's, or several under
    ``results``) or in a seed ensemble's ``ensemble.json`` (checked whole: :data:`ENSEMBLE`)."""
    data = read_checked(path, SVM_RESULTS)
    if data.get("ensemble") is not None:
        return list(check(data, ENSEMBLE, str(path), RunError)["results"].values())
    if data.get("results") is not None:
        return list(data["results"].values())
    if "folds" not in data:
        raise RunError(f"{path}: not the results of sermtl baseline --out (no folds)")
    return [check(data, RESULTS, str(path), RunError)]


def fold_scores(path: Path, metric: str) -> FoldScores:
    """``metric`` of every finished fold of the run(s) or SVM results at ``path``."""
    scores = FoldScores(path, metric)
    if path.is_file():  # sermtl baseline --out, or ensemble.json
        for results in _file_results(path):
            for fold in results["folds"]:
                scores.add(results.get("seed"), fold.get("fold"), fold.get(metric), fold.get("test_digest"), path)
    else:
        for run in cv_runs(path):
            seed = read_run_config(run / "config.json")["train"].get("seed")
            folds, _ = load_folds(run / "folds.json")
            for fold in folds:
                metrics_path = run / f"fold_{fold.fold}" / "metrics.json"
                if metrics_path.is_file():  # a fold not finished has none
                    scores.add(
                        seed, fold.fold, read_metrics(metrics_path).get(metric), test_digest(fold.test), metrics_path
                    )
    if not scores.values:
        raise RunError(
            f"{path}: no finished fold (fold_<k>/metrics.json, or the folds of sermtl baseline --out or ensemble.json)"
        )
    return scores


def _summary(scores: dict[Pair, float]) -> dict[str, Any]:
    seeds = sorted({seed for seed, _ in scores})
    per_seed = [statistics.mean(v for (s, _), v in scores.items() if s == seed) for seed in seeds]
    return {"mean": statistics.mean(per_seed), "std": statistics.pstdev(per_seed), "seeds": seeds, "folds": len(scores)}


@dataclasses.dataclass(frozen=True)
class CompareOptions:
    """What ``sermtl compare`` pairs (declared options)."""

    metric: str = option("uwa", "A number of each fold's metrics.json: wa, uwa, aux_accuracy, …")


def compare_runs(baseline: Path, others: Sequence[Path], metric: str = "uwa") -> dict[str, Any]:
    """Every run of ``others`` against ``baseline`` on their shared (seed, fold) pairs."""
    reference = fold_scores(baseline, metric)
    rows = [{"run": str(baseline), **_summary(reference.values), "paired": None}]
    for other in others:
        mine = fold_scores(other, metric)
        shared = sorted(set(mine.values) & set(reference.values))
        if not shared:
            raise RunError(f"{other} shares no (seed, fold) with {baseline}: compare runs of the same seeds and folds")
        for seed, fold in shared:
            if mine.tests[(seed, fold)] != reference.tests[(seed, fold)]:
                raise RunError(
                    f"{other}: seed {seed} fold {fold} tests other utterances than {baseline}; "
                    "runs compare only on the same test folds (same protocol, --folds and seed)"
                )
        rows.append(
            {"run": str(other), **_summary(mine.values), "paired": paired_over_keys(mine.values, reference.values)}
        )
    return {"baseline": str(baseline), "metric": metric, "runs": rows}


def comparison_table(summary: dict[str, Any]) -> str:
    """The comparison as a Markdown table (percent)."""
    rows = []
    for row in summary["runs"]:
        rows.append(
            [
                row["run"],
                f"{row['mean']:.2f} ± {row['std']:.2f}",
                len(row["seeds"]),
                row["folds"],
                *paired_cells(row["paired"]),
            ]
        )
    metric = summary["metric"]
    header = [
        "run",
        f"{metric} (mean ± std over seeds)",
        "seeds",
        "folds",
        f"Δ {metric}",
        "95 % CI",
        "Wilcoxon p",
        "pairs",
    ]
    return (
        f"Δ {metric}: mean paired difference against `{summary['baseline']}` over the (seed, fold) pairs both "
        "runs finished, with its 95 % Student-t interval and the Wilcoxon signed-rank p-value.\n\n"
        + markdown_table(header, rows)
    )

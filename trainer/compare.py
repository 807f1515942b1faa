"""Paired comparison of finished runs: ``sermtl compare BASELINE RUN…``.

A run is a ``cv`` directory (``config.json``, ``folds.json``, ``fold_<k>/metrics.json``) or
a folder of them, one per seed (``cv --repeats``, a sweep's setting folder). Two runs are
paired by (seed, fold), and only where both folds test the same utterances, so runs from
different sweeps, code versions or protocol options that share their test folds (e.g.
``--valid-fraction 0`` against the default, which moves only validation rows) compare
fold by fold, and runs whose test folds differ are refused in one line. Each run is
summarised as the mean ± std over seeds of its mean over folds (``numpy.std``, as ``cv
--repeats`` and ``sweep`` do) and, against the baseline, the mean paired difference with
its 95 % interval and Wilcoxon p-value (:func:`trainer.stats.paired_over_keys`).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Sequence

from featurestore.atomic import read_json
from featurestore.errors import SermtlError
from trainer.folds import load_folds, natural_key
from trainer.stats import paired_over_keys

Pair = tuple[int, int]


def cv_runs(path: Path) -> list[Path]:
    """``path`` itself when it is a ``cv`` run, else its ``seed_*`` runs."""
    if (path / "folds.json").is_file():
        return [path]
    runs = sorted((p for p in path.glob("seed_*") if (p / "folds.json").is_file()), key=lambda p: natural_key(p.name))
    if not runs:
        raise SermtlError(f"{path}: neither a cv run (no folds.json) nor a folder of seed_* runs")
    return runs


def fold_scores(path: Path, metric: str) -> tuple[dict[Pair, float], dict[Pair, frozenset[str]]]:
    """``metric`` of every finished fold of the runs at ``path``, and each fold's test ids,
    keyed by (seed, fold)."""
    scores: dict[Pair, float] = {}
    tests: dict[Pair, frozenset[str]] = {}
    for run in cv_runs(path):
        seed = (read_json(run / "config.json").get("train") or {}).get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SermtlError(f"{run / 'config.json'}: no integer train.seed")
        folds, _ = load_folds(run / "folds.json")
        for fold in folds:
            metrics_path = run / f"fold_{fold.fold}" / "metrics.json"
            if not metrics_path.is_file():
                continue  # not finished
            value = read_json(metrics_path).get(metric)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SermtlError(f"--metric {metric}: {metrics_path} holds no number of that name (e.g. wa, uwa, aux_accuracy)")
            if (seed, fold.fold) in scores:
                raise SermtlError(f"{path}: seed {seed} fold {fold.fold} appears in two runs")
            scores[(seed, fold.fold)] = float(value)
            tests[(seed, fold.fold)] = frozenset(fold.test)
    if not scores:
        raise SermtlError(f"{path}: no finished fold (fold_<k>/metrics.json)")
    return scores, tests


def _summary(scores: dict[Pair, float]) -> dict[str, Any]:
    seeds = sorted({seed for seed, _ in scores})
    per_seed = [statistics.mean(v for (s, _), v in scores.items() if s == seed) for seed in seeds]
    return {"mean": statistics.mean(per_seed), "std": statistics.pstdev(per_seed), "seeds": seeds, "folds": len(scores)}


def compare_runs(baseline: Path, others: Sequence[Path], metric: str = "uwa") -> dict[str, Any]:
    """Every run of ``others`` against ``baseline`` on their shared (seed, fold) pairs."""
    reference, reference_tests = fold_scores(baseline, metric)
    rows = [{"run": str(baseline), **_summary(reference), "paired": None}]
    for other in others:
        mine, tests = fold_scores(other, metric)
        shared = sorted(set(mine) & set(reference))
        if not shared:
            raise SermtlError(f"{other} shares no (seed, fold) with {baseline}: compare runs of the same seeds and folds")
        for seed, fold in shared:
            if tests[(seed, fold)] != reference_tests[(seed, fold)]:
                raise SermtlError(f"{other}: seed {seed} fold {fold} tests other utterances than {baseline}; "
                                  "runs compare only on the same test folds (same protocol, --folds and seed)")
        rows.append({"run": str(other), **_summary(mine), "paired": paired_over_keys(mine, reference)})
    return {"baseline": str(baseline), "metric": metric, "runs": rows}


def comparison_table(summary: dict[str, Any]) -> str:
    """The comparison as a Markdown table (percent)."""
    from trainer.reports import markdown_table

    rows = []
    for row in summary["runs"]:
        paired = row["paired"]
        cells = ["baseline", "", "", ""]
        if paired is not None:
            cells = [f"{paired['mean']:+.2f}",
                     f"[{paired['ci'][0]:+.2f}, {paired['ci'][1]:+.2f}]" if paired["ci"] else "–",
                     f"{paired['wilcoxon_p']:.3f}" if paired["wilcoxon_p"] is not None else "–", paired["n"]]
        rows.append([row["run"], f"{row['mean']:.2f} ± {row['std']:.2f}", len(row["seeds"]), row["folds"], *cells])
    metric = summary["metric"]
    header = ["run", f"{metric} (mean ± std over seeds)", "seeds", "folds", f"Δ {metric}", "95 % CI", "Wilcoxon p", "pairs"]
    return (f"Δ {metric}: mean paired difference against `{summary['baseline']}` over the (seed, fold) pairs both "
            "runs finished, with its 95 % Student-t interval and the Wilcoxon signed-rank p-value.\n\n"
            + markdown_table(header, rows))

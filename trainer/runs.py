"""Finished run directories as the report sees them: ``config.json``, the results (or the
average of the finished folds), the folds' histories and the layer weights they learned,
every file checked against its declared shape (:mod:`trainer.runfiles`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from featurestore.errors import RunError
from trainer.config import TrainConfig
from trainer.metrics import average_folds
from trainer.runfiles import HISTORY, read_checked, read_metrics, read_results, read_run_config

_FOLD_DIR = re.compile(r"fold_(\d+)$")


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


def fold_dirs(path: Path) -> list[tuple[int, Path]]:
    """``(k, fold_k)`` of the finished folds (those with a ``metrics.json``), by k."""
    found = [(int(m.group(1)), p) for p in path.iterdir() if (m := _FOLD_DIR.match(p.name))]
    return sorted((k, p) for k, p in found if (p / "metrics.json").is_file())


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read a run directory: ``config.json``, ``results.json`` (or, when it is missing, the
    average of the finished folds' ``metrics.json``) and the folds' ``history.json``, each
    checked against its declared shape (:mod:`trainer.runfiles`), the training options
    against their ranges.

    Raises
    ------
    RunError
        ``path`` is not a run directory, no fold of it has finished, or a file of it is
        damaged.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise RunError(f"{path} is not a run directory of 'sermtl cv' (no config.json)")
    config = read_run_config(path / "config.json")
    TrainConfig.from_dict(config["train"], str(path / "config.json"))  # epochs, α… in their ranges
    folds = fold_dirs(path)
    from_folds = not (path / "results.json").is_file()
    if not from_folds:
        results = read_results(path / "results.json")
    elif folds:
        per_fold = [read_metrics(d / "metrics.json") for _, d in folds]
        results = {
            "aux_accuracy": None,
            **average_folds(per_fold),
            "folds": per_fold,
            "protocol": config["protocol"].get("name"),
            "aux": config["train"].get("aux"),
            "store": config.get("store"),
        }
    else:
        raise RunError(f"run directory {path} has no results.json and no finished fold (fold_*/metrics.json)")
    histories = {k: read_checked(d / "history.json", HISTORY) for k, d in folds if (d / "history.json").is_file()}
    return Run(name or path.resolve().name, path, config, results, histories, from_folds)


def learned_layer_weights(run_path: Path) -> tuple[list[str], list[list[float]]]:
    """The softmax layer weights each finished fold of a ``--layer weighted`` run learned
    (from its checkpoint), and the stored layers' names (``hidden state k``)."""
    from trainer.checkpoint import load_checkpoint

    names: list[str] = []
    weights = []
    for _, fold_dir in fold_dirs(run_path):
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

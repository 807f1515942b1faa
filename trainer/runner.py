"""``sermtl train`` and ``sermtl cv`` as one call: a resolved run (:func:`trainer.run_options.resolve_run`)
→ its run directory, one fold or every fold, once or per seed, in one process or over the
ranks of ``torchrun``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from featurestore.distributed import process_group
from featurestore.store.fusion import spec_manifest, store_name
from trainer.cv import run_cv, run_repeats
from trainer.distributed import run_cv_distributed, run_sweep_distributed
from trainer.ensembles import describe_ensemble
from trainer.loop import resolved_aux
from trainer.metrics import describe_repeats, describe_results
from trainer.run_options import ResolvedRun
from trainer.sweep import Sweep, run_sweep


def default_run_dir(run: ResolvedRun) -> Path:
    """``runs/<store>-<aux>-<protocol>`` (``--aux auto`` resolved from the store first)."""
    aux = "nomtl" if run.config.aux in ("none", "") else run.config.aux
    return Path("runs") / f"{store_name(run.store)}-{aux}-{run.protocol.name if run.protocol else 'default'}"


@dataclasses.dataclass(frozen=True)
class TrainingOutcome:
    """A finished ``train``/``cv``: its folder, the results (one seed) or the per-seed
    results, their summary and the seed ensemble (``--repeats``; ``None`` while a fold of a
    seed is unfinished, e.g. ``train --fold``)."""

    run_dir: Path
    results: dict[str, Any] | None = None
    per_seed: dict[int, dict[str, Any]] | None = None
    summary: dict[str, Any] | None = None
    ensemble: dict[str, Any] | None = None

    def lines(self) -> list[str]:
        """What the command prints: one line per seed, the summary and the ensemble (or a
        note that it waits for the unfinished folds), or the results."""
        if self.per_seed is None:
            return [f"{self.run_dir}: {describe_results(self.results or {})}"]
        seeds = [f"{self.run_dir / f'seed_{seed}'}: {describe_results(r)}" for seed, r in self.per_seed.items()]
        ensemble = (
            describe_ensemble(self.ensemble)
            if self.ensemble is not None
            else "no seed ensemble until every fold of every seed is finished"
        )
        return [*seeds, f"{self.run_dir}: {describe_repeats(self.summary or {})}", f"{self.run_dir}: {ensemble}"]


def run_training(
    run: ResolvedRun,
    out: str | Path | None = None,
    *,
    only_folds: list[int] | None = None,
    repeats: int = 1,
    progress: bool = True,
    tensorboard: bool = False,
) -> TrainingOutcome | None:
    """Train and test the folds of ``run`` (``only_folds``, else all) into ``out`` (default
    :func:`default_run_dir`), once per seed ``config.seed`` … ``+repeats−1`` (resumable).

    Under ``torchrun`` the ranks share the folds; every rank calls this, rank 0 returns the
    outcome and the others ``None``."""
    named = dataclasses.replace(run, config=resolved_aux(run.config, spec_manifest(run.store)))
    run_dir = Path(out) if out else default_run_dir(named)
    with process_group(run.config.device) as group:  # None outside torchrun
        runner = functools.partial(run_cv_distributed, group) if group else run_cv
        runner = functools.partial(runner, progress=progress, tensorboard=tensorboard)
        if repeats > 1:
            found = run_repeats(runner, run.store, run_dir, run.config, run.protocol, repeats, only_folds=only_folds)
            if found is None:
                return None
            return TrainingOutcome(
                run_dir, per_seed=found["per_seed"], summary=found["summary"], ensemble=found["ensemble"]
            )
        results = runner(run.store, run_dir, run.config, run.protocol, only_folds=only_folds)
    return None if results is None else TrainingOutcome(run_dir, results=results)


def run_sweep_command(plan: Sweep, progress: bool = True) -> dict[str, Any] | None:
    """Run ``plan`` (:meth:`Sweep.from_options`) in one process or over the ranks of
    ``torchrun``; the summary, or ``None`` on ranks other than 0."""
    with process_group(plan.base.device) as group:  # None outside torchrun
        return run_sweep_distributed(group, plan, progress=progress) if group else run_sweep(plan, progress=progress)

"""Cross-validation folds, and a sweep's jobs, spread over processes launched by ``torchrun``.

Rank 0 writes the run directory's ``config.json`` and ``folds.json``; then rank *r* of
*W* trains every *W*-th fold of the list from the *r*-th on (all folds, or those asked
for), each into its own ``fold_<f>/``
(finished folds are skipped, as in a single-process resume); after all ranks are done,
rank 0 writes ``results.json`` over every fold. On GPUs each rank trains on GPU
``LOCAL_RANK`` (see :func:`featurestore.distributed.process_group`). A fold's training
depends only on the seed and the fold, so the metrics equal a single-process run's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featurestore.atomic import write_json
from featurestore.distributed import Group
from trainer.config import TrainConfig
from trainer.cv import Protocol, StoreSession, prepare_run, run_cv
from trainer.sweep import Sweep, plan_sweep, setting_name, write_summary


def fold_share(folds: Sequence[int], rank: int, world: int) -> list[int]:
    """The folds that ``rank`` of ``world`` trains: those at positions ``i`` of ``folds``
    with ``i mod world == rank`` (so any list of folds is shared evenly).

    >>> fold_share([1, 2, 3, 4, 5], rank=1, world=2)
    [2, 4]
    >>> fold_share([1, 3], rank=1, world=2)
    [3]
    """
    return [f for i, f in enumerate(folds) if i % world == rank]


def _fold_numbers(
    store_path: str | Path, out_dir: str | Path, config: TrainConfig, protocol: Protocol | None
) -> list[int]:
    with StoreSession(store_path) as session:
        run = prepare_run(session, out_dir, config, protocol)
        with run.lock:
            return [f.fold for f in run.folds]


def run_cv_distributed(
    group: Group,
    store_path: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    protocol: Protocol | None = None,
    only_folds: list[int] | None = None,
    progress: bool = True,
    tensorboard: bool = False,
) -> dict[str, Any] | None:
    """:func:`~trainer.cv.run_cv` with the folds shared among the ranks of ``group``.

    Call it on every rank with the same arguments. Returns the content of ``results.json``
    on rank 0 and ``None`` on the others; a :class:`SermtlError` on any rank is raised on
    all of them (finished folds stay for the re-run).
    """
    numbers = group.broadcast(group.run(_fold_numbers, store_path, out_dir, config, protocol, ranks={0}))
    mine = fold_share(only_folds or numbers, group.rank, group.world)
    busy = {group.rank} if mine else set()  # a rank without folds only waits for the others
    group.run(
        run_cv,
        store_path,
        out_dir,
        config,
        protocol,
        only_folds=mine,
        progress=progress and group.rank == 0,
        write_results=False,
        exclusive=False,
        ranks=busy,
        tensorboard=tensorboard,
    )
    return group.run(run_cv, store_path, out_dir, config, protocol, only_folds=only_folds, progress=False, ranks={0})


def run_sweep_distributed(group: Group, sweep: Sweep, progress: bool = True) -> dict[str, Any] | None:
    """:func:`~trainer.sweep.run_sweep` with its (setting, seed, fold) jobs dealt out to the
    ranks of ``group`` (several ranks may share a GPU). Rank 0 checks the sweep and writes
    every run directory's ``config.json`` and ``folds.json``; each rank then trains its
    jobs, loading the store once; rank 0 finally writes each run's ``results.json`` and the
    sweep's summary. Finished jobs are skipped, so an interrupted sweep resumes. Returns the
    summary on rank 0, ``None`` on the others."""

    def prepare() -> list[tuple[int, int]]:
        jobs = []
        with StoreSession(sweep.store) as session:
            identity = plan_sweep(session, sweep)
            sweep.out.mkdir(parents=True, exist_ok=True)
            write_json(sweep.out / "grid.json", identity)
            for index, (setting, seed) in enumerate(sweep.jobs()):
                run = prepare_run(session, sweep.run_dir(setting, seed), sweep.config(setting, seed), sweep.protocol)
                with run.lock:
                    jobs += [(index, fold.fold) for fold in run.folds]
        return jobs

    def train(jobs: list[tuple[int, int]]) -> None:
        with StoreSession(sweep.store) as session:
            for index, fold in jobs:
                setting, seed = sweep.jobs()[index]
                run_cv(
                    sweep.store,
                    sweep.run_dir(setting, seed),
                    sweep.config(setting, seed),
                    sweep.protocol,
                    only_folds=[fold],
                    progress=False,
                    write_results=False,
                    exclusive=False,
                    session=session,
                )

    def finish() -> dict[str, Any]:
        with StoreSession(sweep.store) as session:  # every fold is done: this writes results.json only
            results = {
                (setting_name(setting), seed): run_cv(
                    sweep.store,
                    sweep.run_dir(setting, seed),
                    sweep.config(setting, seed),
                    sweep.protocol,
                    progress=False,
                    session=session,
                )
                for setting, seed in sweep.jobs()
            }
        return write_summary(sweep, results)

    jobs = group.broadcast(group.run(prepare, ranks={0}))
    mine = jobs[group.rank :: group.world]
    group.run(train, mine, ranks={group.rank} if mine else set())
    return group.run(finish, ranks={0})

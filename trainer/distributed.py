"""Cross-validation folds spread over processes launched by ``torchrun``.

Rank 0 writes the run directory's ``config.json`` and ``folds.json``; then rank *r* of
*W* trains every *W*-th fold of the list from the *r*-th on (all folds, or those asked
for), each into its own ``fold_<f>/``
(finished folds are skipped, as in a single-process resume); after all ranks are done,
rank 0 writes ``results.json`` over every fold. On GPUs each rank trains on GPU
``LOCAL_RANK`` (see :func:`featurestore.distributed.process_group`). A fold's training
depends only on the seed and the fold, so the metrics equal a single-process run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from featurestore.distributed import Group
from trainer.cv import Protocol, prepare_run, run_cv
from trainer.config import TrainConfig


def fold_share(folds: Sequence[int], rank: int, world: int) -> list[int]:
    """The folds that ``rank`` of ``world`` trains: those at positions ``i`` of ``folds``
    with ``i mod world == rank`` (so any list of folds is shared evenly).

    >>> fold_share([1, 2, 3, 4, 5], rank=1, world=2)
    [2, 4]
    >>> fold_share([1, 3], rank=1, world=2)
    [3]
    """
    return [f for i, f in enumerate(folds) if i % world == rank]


def _fold_numbers(store_path: str | Path, out_dir: str | Path, config: TrainConfig,
                  protocol: Protocol | None) -> list[int]:
    store, _, folds, lock = prepare_run(store_path, out_dir, config, protocol)
    with store, lock:
        pass
    return [f.fold for f in folds]


def run_cv_distributed(group: Group, store_path: str | Path, out_dir: str | Path, config: TrainConfig,
                       protocol: Protocol | None = None, only_folds: list[int] | None = None,
                       progress: bool = True) -> dict[str, Any] | None:
    """:func:`~trainer.cv.run_cv` with the folds shared among the ranks of ``group``.

    Call it on every rank with the same arguments. Returns the content of ``results.json``
    on rank 0 and ``None`` on the others; a :class:`SermtlError` on any rank is raised on
    all of them (finished folds stay for the re-run).
    """
    numbers = group.broadcast(group.run(_fold_numbers, store_path, out_dir, config, protocol, ranks={0}))
    mine = fold_share(only_folds or numbers, group.rank, group.world)
    busy = {group.rank} if mine else set()  # a rank without folds only waits for the others
    group.run(run_cv, store_path, out_dir, config, protocol, only_folds=mine, progress=progress and group.rank == 0,
              write_results=False, exclusive=False, ranks=busy)
    return group.run(run_cv, store_path, out_dir, config, protocol, only_folds=only_folds, progress=False, ranks={0})

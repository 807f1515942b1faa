"""Extraction spread over processes launched by ``torchrun`` (torch.distributed).

``torchrun --nproc-per-node N --no-python sermtl extract …`` starts N copies of the
command; each finds its rank in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``). Rank 0 opens the target store (taking its lock for the whole run), lists
what it still lacks, cuts that into the batches a single process would make and deals the
batches out to the ranks, balanced by audio duration. Every rank extracts its share with
:func:`~featurestore.pipeline.extract_to_store` into its own shard store
(``<target>.shards/rank-<r>.zarr``); after all ranks are done, rank 0 copies the shards into
the target in manifest order and removes them. A crashed run resumes: the target skips what
it holds, and entries already in a shard (made from the audio the manifest names, and
matching their checksums) are copied into the target when rank 0 opens it, not recomputed;
one process resuming without torchrun takes them in the same way (:func:`take_in_shards`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import os
import re
import shutil
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from featurestore.errors import ConfigError, SermtlError, StoreError, describe_error
from featurestore.features.base import FeatureExtractor
from featurestore.manifest import Manifest, same_audio
from featurestore.pipeline import ExtractionReport, extract_to_store, plan_batches
from featurestore.store.creation import store_fingerprint
from featurestore.store.merge import copy_entries
from featurestore.store.reader import FeatureStore, open_store
from featurestore.store.writer import StoreWriter

#: The environment variables ``torchrun`` sets for every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")
#: How long a rank waits for the others at a synchronisation point (ranks finishing their
#: shards at different times, rank 0 merging); torchrun stops every rank when one dies.
TIMEOUT = datetime.timedelta(hours=24)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Group:
    """This process's place in a torch.distributed run, and the few collectives sermtl needs."""

    rank: int
    world: int
    local_rank: int

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, by rank (a synchronisation point)."""
        import torch.distributed as dist

        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def run(self, fn: Callable[..., T], *args: Any, ranks: set[int] | None = None, **kwargs: Any) -> T | None:
        """Call ``fn`` on ``ranks`` (default: all), then wait for every rank.

        A :class:`SermtlError` on any rank is raised on every rank, prefixed with the rank
        that failed, so no rank is left waiting and every process exits with an error; any
        other exception is passed on the same way as one line (``rank r: Type: message``),
        after its traceback is printed on the failing rank's stderr.
        ``KeyboardInterrupt`` and ``SystemExit`` propagate on their rank alone.
        """
        result, error = None, None
        if ranks is None or self.rank in ranks:
            try:
                result = fn(*args, **kwargs)
            except SermtlError as exc:
                error = f"rank {self.rank}: {exc}"
            except Exception as exc:  # a bug or a library's error: the other ranks must not wait forever
                traceback.print_exc()  # on this rank's stderr, for whoever debugs it
                error = f"rank {self.rank}: {describe_error(exc)}"
        failed = [e for e in self.gather(error) if e]
        if failed:
            raise StoreError(failed[0])
        return result


def launched_by_torchrun() -> bool:
    """True when the environment holds a torchrun launch of more than one process."""
    return all(v in os.environ for v in TORCHRUN_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def _bind_gpu(device: str, local_rank: int) -> None:
    """Make this rank's GPU the current CUDA device (nothing on CPU).

    ``auto`` and ``cuda`` mean GPU ``LOCAL_RANK``; ``cuda:K`` is taken as given.
    """
    import torch

    if device.startswith("cpu") or not torch.cuda.is_available():
        return
    index = torch.device(device).index if device.startswith("cuda:") else local_rank
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {device}: rank with LOCAL_RANK {local_rank} needs GPU {index}, "
            f"this node has {torch.cuda.device_count()}; start at most that many processes per node"
        )
    torch.cuda.set_device(index)


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[Group | None]:
    """Join the torchrun process group for the command's duration (``None`` outside torchrun).

    On a GPU, that GPU becomes the current CUDA device, so ``auto``/``cuda`` resolve to it.
    The backend is gloo everywhere: sermtl's collectives carry only small Python objects
    (work lists, errors), never tensors, and gloo, unlike NCCL, lets several ranks share
    one GPU (``--device cuda:0``: several folds trained at once on one GPU).
    """
    if not launched_by_torchrun():
        yield None
        return
    import torch.distributed as dist

    local_rank = int(os.environ["LOCAL_RANK"])
    _bind_gpu(device, local_rank)
    dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        yield Group(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank)
    except BaseException:
        dist.destroy_process_group()  # no barrier: the other ranks may be gone
        raise
    # every rank is done talking before any tears its connections down (a rank that tore
    # down while another was still finishing has been seen to abort that one at exit)
    try:
        dist.barrier()  # fails at once, rather than waiting, when another rank has failed and gone
    finally:
        dist.destroy_process_group()


# -- sharded extraction ---------------------------------------------------------------------
def shard_dir(store_path: str | Path) -> Path:
    """Where the ranks' shard stores of ``store_path`` live while a run is under way."""
    path = Path(store_path)
    return path.with_name(path.name + ".shards")


#: What a shard folder holds: the ranks' stores, with their lock and creation files.
_SHARD_ENTRY = re.compile(r"^rank-\d+\.zarr(\.lock|\.partial|\.partial\.sermtl)?$")


def _check_own_shards(shards: Path) -> None:
    """Refuse a shard folder holding anything sermtl does not put there (a folder of the
    user's that happens to have the name), before anything in it is read or removed."""
    if shards.is_symlink() or any(not _SHARD_ENTRY.match(p.name) for p in shards.iterdir()):
        raise StoreError(
            f"{shards} holds files sermtl did not make (torchrun extraction keeps its rank shards "
            "there): move it away, then run again"
        )


def deal_batches(batches: list[list[str]], durations: dict[str, float], world: int) -> list[list[str]]:
    """Give each batch to the rank with the least audio so far (largest batches first).

    >>> deal_batches([["a"], ["b", "c"], ["d"]], {"a": 3, "b": 1, "c": 1, "d": 1}, 2)
    [['a'], ['b', 'c', 'd']]
    """
    loads = [0.0] * world
    shares: list[list[str]] = [[] for _ in range(world)]
    for batch in sorted(batches, key=lambda b: -sum(durations[u] for u in b)):
        rank = int(np.argmin(loads))
        shares[rank] += batch
        loads[rank] += sum(durations[u] for u in batch)
    return shares


def _reusable(store: FeatureStore, manifest: Manifest) -> list[str]:
    """The entries of ``store`` computed from the audio that ``manifest`` names for them."""
    return [u for u in store.ids() if u in manifest and same_audio(store.full_manifest[u], manifest[u])]


def _stale(store: FeatureStore, manifest: Manifest) -> list[str]:
    """The rows of ``store`` (committed or not) that point to other audio than ``manifest``'s."""
    rows = store.full_manifest
    return [u for u in rows.ids() if u in manifest and not same_audio(rows[u], manifest[u])]


@contextlib.contextmanager
def _open_shards(shards: Path, fingerprint: str, *, remove_unreadable: bool = False) -> Iterator[list[FeatureStore]]:
    """The shard stores in ``shards``, open for the ``with`` block; a shard of another
    feature config is refused.

    With ``remove_unreadable``, a shard that does not open as a store (one left
    half-deleted by an interrupted clean-up) is removed with a warning instead.
    """
    with contextlib.ExitStack() as stack:
        stores: list[FeatureStore] = []
        for path in sorted(shards.glob("rank-*.zarr")) if shards.is_dir() else []:
            try:
                store = stack.enter_context(open_store(path))
            except SermtlError as exc:
                if not remove_unreadable:
                    raise
                warnings.warn(f"{path}: not a complete shard store, removed ({exc})", stacklevel=3)
                shutil.rmtree(path)
                continue
            if store.attrs.get("fingerprint") != fingerprint:
                raise StoreError(f"{store.path} is a shard of another feature config; delete {shards}")
            stores.append(store)
        yield stores


@dataclasses.dataclass
class _Target:
    """Rank 0's side of a run: the open target store and what it still lacks."""

    writer: StoreWriter
    fingerprint: str
    pending: list[str]
    shares: list[list[str]]
    salvaged: int  # entries copied from an earlier run's shards when the target was opened


def _salvage_shards(writer: StoreWriter, shards: Path, fingerprint: str, wanted: list[str]) -> int:
    """Copy into the target what the shards an earlier run left hold of the ``wanted``
    utterances, remove those shards, and return how many entries were copied.

    An entry is copied only when the shard's manifest row names the audio the target's row
    names and its frames read and match the checksum the shard recorded; the rest is
    recomputed by this run. A warning names each damaged entry (shard and utterance) and
    each shard whose manifest points an id to other audio. Shards that do not open as
    stores are removed. Each rank then writes a fresh shard of its own.
    """
    salvaged, done = 0, []
    with _open_shards(shards, fingerprint, remove_unreadable=True) as stores:
        for store in stores:
            reusable = set(_reusable(store, writer.manifest))
            ids = [u for u in wanted if u in reusable]
            copied = copy_entries(
                writer, {u: store for u in ids}, ids, on_unusable=functools.partial(_warn_unusable, store.path)
            )
            changed = _stale(store, writer.manifest)
            if changed:
                warnings.warn(
                    f"{store.path}: shard of an earlier run made for other audio of {len(changed)} "
                    f"utterance(s) (e.g. {changed[0]}); its {copied} matching entries were kept, the rest "
                    "is recomputed",
                    stacklevel=3,
                )
            salvaged += copied
            done.append(store.path)
    for path in done:
        shutil.rmtree(path)
    return salvaged


def _warn_unusable(shard: Path, utt_id: str, reason: str) -> None:
    warnings.warn(f"{shard}: shard entry of {utt_id} {reason}; it is recomputed", stacklevel=4)


def _open_writer(
    manifest: Manifest, extractor: FeatureExtractor, store_path: Path, format: str | None, dtype: str
) -> tuple[StoreWriter, str]:
    """The target's writer (holding its lock) and the fingerprint its shards must carry."""
    writer = StoreWriter(
        store_path,
        manifest,
        extractor.describe(),
        dtype=dtype,
        dim=extractor.dim,
        num_layers=extractor.num_layers,
        frame_rate=extractor.frame_rate,
        format=format,
    )
    return writer, store_fingerprint({"feature": extractor.describe(), "dtype": writer.dtype.name})


def take_in_shards(
    manifest: Manifest,
    extractor: FeatureExtractor,
    store_path: str | Path,
    *,
    format: str | None = None,
    dtype: str = "float32",
) -> int:
    """One process resuming an interrupted ``torchrun`` extraction: copy into the store what
    the shards of that run hold (checked as rank 0 checks them), remove the shards, and
    return how many entries were copied (0 when there are no shards)."""
    path, shards = Path(store_path), shard_dir(store_path)
    if not shards.is_dir():
        return 0
    _check_own_shards(shards)
    writer, fingerprint = _open_writer(manifest, extractor, path, format, dtype)
    with writer:
        copied = _salvage_shards(writer, shards, fingerprint, writer.pending(manifest.ids()))
    shutil.rmtree(shards, ignore_errors=True)
    return copied


def _open_target(
    manifest: Manifest,
    extractor: FeatureExtractor,
    store_path: Path,
    world: int,
    *,
    format: str | None,
    dtype: str,
    batch_seconds: float,
    max_batch: int | None,
) -> _Target:
    """Open (or create) the target, holding its lock, take in what an earlier run's shards
    hold, and deal out the utterances the target still lacks."""
    writer, fingerprint = _open_writer(manifest, extractor, store_path, format, dtype)
    try:
        salvaged = _salvage_shards(writer, shard_dir(store_path), fingerprint, writer.pending(manifest.ids()))
        pending = writer.pending(manifest.ids())
        durations = {u: float(manifest[u]["duration"] or 0.0) for u in pending}
        shares = deal_batches(plan_batches(durations, batch_seconds, max_batch), durations, world)
    except BaseException:
        writer.close()
        raise
    return _Target(writer, fingerprint, pending, shares, salvaged)


def _merge_shards(target: _Target, shards: Path) -> tuple[int, list[dict[str, Any]]]:
    """Copy the target's missing utterances from the shards, in manifest order, and record
    the shards' skipped items; returns (utterances copied, skipped items).

    Only entries computed from the audio the target's manifest names are used.
    """
    with _open_shards(shards, target.fingerprint) as stores:
        holder = {u: store for store in stores for u in _reusable(store, target.writer.manifest)}
        reports = {item["utt_id"]: item for store in stores for item in store.skipped()}
        copied = copy_entries(target.writer, holder, [u for u in target.pending if u in holder])
        skipped = [reports[u] for u in target.pending if u not in holder and u in reports]
        for item in skipped:
            target.writer.skip(item["utt_id"], item["error"])
    return copied, [{"utt_id": item["utt_id"], "error": item["error"]} for item in skipped]


def extract_sharded(
    group: Group,
    manifest: Manifest,
    extractor: FeatureExtractor,
    store_path: str | Path,
    *,
    format: str | None = None,
    dtype: str = "float32",
    batch_seconds: float = 200.0,
    max_batch: int | None = None,
    progress: bool = True,
    repair: bool = False,
    **options: Any,
) -> ExtractionReport | None:
    """:func:`~featurestore.pipeline.extract_to_store` over the ranks of ``group``, into one store.

    Call it on every rank with the same arguments (``options`` go to ``extract_to_store``).
    Returns the target's report on rank 0, ``None`` on the others. A :class:`SermtlError`
    on any rank is raised on all of them; finished shard entries are kept for the re-run.
    """
    if repair:
        raise ConfigError("--repair recomputes a few entries in place: run it in one process, without torchrun")
    started = time.perf_counter()
    path, shards = Path(store_path), shard_dir(store_path)
    target = group.run(
        _open_target,
        manifest,
        extractor,
        path,
        group.world,
        format=format,
        dtype=dtype,
        batch_seconds=batch_seconds,
        max_batch=max_batch,
        ranks={0},
    )
    try:
        share = group.broadcast(target.shares if target else None)[group.rank]

        def extract_share() -> float:
            if not share:
                return 0.0
            report = extract_to_store(
                manifest.subset(share),
                extractor,
                shards / f"rank-{group.rank}.zarr",
                format="zarr",
                dtype=dtype,
                batch_seconds=batch_seconds,
                max_batch=max_batch,
                progress=progress and group.rank == 0,
                **options,
            )
            return report.audio_seconds

        seconds = group.gather(group.run(extract_share))
        merged = group.run(_merge_shards, target, shards, ranks={0})
    finally:
        if target is not None:
            target.writer.close()
    if target is None:
        return None
    _check_own_shards(shards)
    shutil.rmtree(shards, ignore_errors=True)
    copied, skipped = merged
    return ExtractionReport(
        store=path,
        stored=copied + target.salvaged,
        already_done=len(manifest) - len(target.pending) - target.salvaged,
        skipped=skipped,
        audio_seconds=float(sum(seconds)),
        elapsed=time.perf_counter() - started,
    )

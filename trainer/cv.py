"""Cross-validation runs: all folds of a protocol, written to a run directory, resumable.

Run directory::

    RUN/config.json           store, protocol, training config (the run's identity)
    RUN/folds.json            the folds (utterance ids), reused when the run resumes
    RUN/fold_<k>/metrics.json per-fold test metrics (written last: marks the fold done)
    RUN/fold_<k>/predictions.csv, history.json, checkpoint.pt
    RUN/fold_<k>/history.csv  one row per epoch so far, rewritten after every epoch
    RUN/fold_<k>/embeddings.npz  the test rows' ids, labels and emotion embeddings
    RUN/results.json          averages over folds (percent) and the per-fold list
    RUN/run.lock              held while a command writes the directory

Every file is written atomically (temporary file, then rename), and a fold counts as
finished only when its ``metrics.json`` exists (written after everything else), so an
interrupted ``cv``, even one killed with ``kill -9``, redoes just the unfinished fold.
Restarting with a different config, or on a store that changed since, is refused; every
check runs before the directory gets its first file (:func:`plan_run`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featurestore.atomic import atomic_write, write_json
from featurestore.errors import ConfigError, RunError, SermtlError
from featurestore.features.base import resolve_device
from featurestore.locking import ExclusiveLock
from featurestore.options import check_value
from featurestore.progress import note, progress_bar
from featurestore.store.fusion import StoreSpec, open_stores, store_record
from trainer.checkpoint import save_checkpoint
from trainer.config import TrainConfig
from trainer.data import FeatureBank, open_bank, resolve_layer
from trainer.folds import Fold, check_folds, load_folds, save_folds
from trainer.loop import check_columns, resolve_config, resolved_aux, train_fold
from trainer.metrics import average_folds, summarise_repeats
from trainer.protocols import Protocol, default_protocol
from trainer.run_options import RunOptions
from trainer.runfiles import read_metrics, read_run_config, write_predictions
from trainer.speakers import speaker_groups, warn_if_speakers_do_not_span_the_classes


def _comparable(identity: dict[str, Any], source: str) -> dict[str, Any]:
    """A run identity with every option present, the training options by their own names
    (run directories of older versions lack options added since, and kept them flat)."""
    return {
        **identity,
        "protocol": {**dataclasses.asdict(Protocol()), **identity["protocol"]},
        "train": TrainConfig.from_dict(identity["train"], source).flat(),
    }


def _differences(previous: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """Names of what differs between a saved run identity and this one (``train.epochs``, ``store``)."""
    changed = []
    for part, value in identity.items():
        old = previous.get(part)
        if isinstance(value, dict) and isinstance(old, dict):
            changed += [f"{part}.{key}" for key in value if old.get(key) != value[key]]
        elif old != value:
            changed.append(part)
    return changed


class StoreSession:
    """A store opened once, with its feature banks (each loaded once, its normalisation
    statistics kept per training set), shared by every run made through it: the folds of
    a run, the seeds of ``--repeats``, the settings of a sweep."""

    def __init__(self, store_path: StoreSpec) -> None:
        self.spec = store_path
        self.store = open_stores(store_path)
        #: the store's path (for a fusion of several stores, their paths joined by ``+``)
        self.path = Path(self.store.path)
        self._banks: dict[tuple[str, str, str], FeatureBank] = {}
        self._folds: dict[tuple[str, int, str], list[Fold]] = {}

    @functools.cached_property
    def identity(self) -> dict[str, Any]:
        """What a run records of its store, and checks when it resumes: the path, the feature
        fingerprint, the entry count and a digest of the entries' ids, frame counts and
        checksums (so a store that grew, or was extracted again, is not taken for the one the
        run trained on); computed once per session."""
        digest = hashlib.sha256()
        checksums = self.store.checksums()
        for utt_id in self.store.ids():
            digest.update(f"{utt_id}\t{self.store.num_frames(utt_id)}\t{checksums.get(utt_id, -1)}\n".encode())
        return {
            "store": store_record(self.spec),
            "store_fingerprint": self.store.attrs.get("fingerprint"),
            "store_entries": len(self.store),
            "store_digest": digest.hexdigest()[:16],
        }

    def bank(self, layer: str | int | None, device: str, input_norm: str = "global") -> FeatureBank:
        """The bank of ``layer`` on ``device`` (loaded on first use); for ``input_norm``
        ``speaker``, its speaker-normalised view (:mod:`trainer.speakers`)."""
        resolved = resolve_device(device)
        key = (str(layer), str(resolved), "")
        if key not in self._banks:
            self._banks[key] = open_bank(self.store, layer, resolved)
        if input_norm != "speaker":
            return self._banks[key]
        speaker_key = (*key[:2], "speaker")
        if speaker_key not in self._banks:
            bank = self._banks[key]
            self._banks[speaker_key] = bank.speaker_normalised(speaker_groups(self.store.manifest, list(bank.entries)))
        return self._banks[speaker_key]

    def folds(self, protocol: Protocol, seed: int, label: str) -> list[Fold]:
        """The checked folds of ``protocol`` at ``seed`` for ``label``, drawn once per
        session (a sweep's settings share them, so planning stays linear in its size)."""
        key = (repr(protocol), seed, label)
        if key not in self._folds:
            folds = protocol.make(self.store.manifest, seed)
            _check_folds(folds, self.store.manifest, protocol, label)
            self._folds[key] = folds
        return self._folds[key]

    def close(self) -> None:
        self._banks.clear()
        self.store.close()

    def __enter__(self) -> StoreSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclasses.dataclass
class RunPlan:
    """A run directory checked and not yet written: what ``config.json`` will record
    (``identity``), the protocol, the folds and the config (its ``aux`` resolved)."""

    out: Path
    identity: dict[str, Any]
    protocol: Protocol
    folds: list[Fold]
    config: TrainConfig


@dataclasses.dataclass
class PreparedRun:
    """A checked and written run directory, with its lock (a no-op context for torchrun
    ranks), which the caller releases."""

    protocol: Protocol
    folds: list[Fold]
    config: TrainConfig
    lock: contextlib.AbstractContextManager


def plan_run(
    session: StoreSession,
    out_dir: str | Path,
    config: TrainConfig,
    protocol: Protocol | None = None,
    only_folds: list[int] | None = None,
) -> RunPlan:
    """Every check of a run, writing nothing: the config against the store (columns, layer,
    ``aux``), a run directory already there against this run (config, store state,
    finished folds), the folds (``only_folds`` among them) and the classes of each task in
    every fold."""
    store, out = session.store, Path(out_dir)
    protocol = protocol or default_protocol(store.manifest)
    explicit = config.network.input_norm != "auto"
    config = resolved_aux(config, store.manifest)
    check_columns(store, config)  # before the folds are drawn by the label
    drawn = session.folds(protocol, config.seed, config.label)
    config, decisions = resolve_config(config, store.manifest, sorted({u for fold in drawn for u in fold.train}))
    if explicit and config.network.speaker_normalised:
        warn_if_speakers_do_not_span_the_classes(store.manifest, store.ids(), config.label)
    resolve_layer(store, config.layer)
    identity = {**session.identity, "protocol": dataclasses.asdict(protocol), "train": config.to_dict()}
    if decisions:
        identity["decisions"] = decisions
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a run directory")
    if (out / "config.json").exists():
        _check_same_run(out, _saved_identity(out / "config.json"), identity)
    folds_path = out / "folds.json"
    if folds_path.exists():
        folds = load_folds(folds_path)[0]
        _check_folds(folds, store.manifest, protocol, config.label)
    else:
        folds = drawn
    check_tasks(store.manifest, folds, config)
    unknown = sorted(set(only_folds or ()) - {f.fold for f in folds})
    if unknown:
        raise ConfigError(f"--fold {unknown[0]}: the protocol has folds 1..{len(folds)}")
    for fold in folds:
        _check_finished_fold(out / f"fold_{fold.fold}")
    return RunPlan(out, identity, protocol, folds, config)


def prepare_run(
    session: StoreSession,
    out_dir: str | Path,
    config: TrainConfig,
    protocol: Protocol | None = None,
    exclusive: bool = True,
    only_folds: list[int] | None = None,
) -> PreparedRun:
    """:func:`plan_run`, then take the run directory's lock (unless not ``exclusive``:
    torchrun ranks share a run directory) and write (or check again, under the lock) its
    ``config.json`` and ``folds.json``. Nothing is written before every check has passed."""
    plan = plan_run(session, out_dir, config, protocol, only_folds)
    out, config_path, folds_path = plan.out, plan.out / "config.json", plan.out / "folds.json"
    try:
        out.mkdir(parents=True, exist_ok=True)  # only now: a refused run leaves no directory behind
    except OSError as exc:
        raise RunError(f"cannot create run directory {out}: {os.strerror(exc.errno) if exc.errno else exc}") from None
    lock = ExclusiveLock(out / "run.lock", f"run directory {out}") if exclusive else contextlib.nullcontext()
    try:
        if config_path.exists():  # another run may have written it while this one was checking
            _check_same_run(out, _saved_identity(config_path), plan.identity)
        else:
            write_json(config_path, plan.identity)
        if not folds_path.exists():
            save_folds(plan.folds, folds_path, {**dataclasses.asdict(plan.protocol), "seed": plan.config.seed})
    except BaseException:
        lock.__exit__(None, None, None)
        raise
    return PreparedRun(plan.protocol, plan.folds, plan.config, lock)


def _check_folds(folds: list[Fold], manifest, protocol: Protocol, label: str) -> None:
    """:func:`~trainer.folds.check_folds`, grouped by the protocol's column where it has one."""
    check_folds(
        folds,
        manifest,
        label_column=label,
        group_column=protocol.by if protocol.name in ("loso", "group-kfold", "split") else None,
    )


def _saved_identity(config_path: Path) -> dict[str, Any]:
    """A run directory's ``config.json``, checked to be one (:data:`~trainer.runfiles.RUN_CONFIG`,
    its protocol's values by :class:`~trainer.protocols.Protocol`)."""
    saved = read_run_config(config_path)
    Protocol.from_dict(saved["protocol"], str(config_path))
    return saved


def _check_same_run(out: Path, saved: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse to resume a run directory made with another config or from another store
    (entries added, removed or extracted again since), naming what changed."""
    known = {key: value for key, value in identity.items() if key in saved}  # runs of older versions lack some keys
    changed = _differences(_comparable(saved, str(out / "config.json")), _comparable(known, "this run"))
    if not changed:
        return
    if any(key.startswith("store_") for key in changed):
        before, now = saved.get("store_entries"), identity["store_entries"]
        what = f"{before} entries then, {now} now" if before != now else "its entries were extracted again"
        raise RunError(f"run directory {out} was trained on another state of the store ({what}); use another --out")
    raise RunError(f"run directory {out} holds a run with another {', '.join(changed)}; use another --out")


#: What a finished fold directory holds; ``metrics.json`` is written last and marks it finished.
FOLD_FILES = ("checkpoint.pt", "predictions.csv", "history.json", "metrics.json")


def _check_finished_fold(fold_dir: Path) -> None:
    """A fold marked finished (its ``metrics.json`` exists) must hold all its files, and a
    ``metrics.json`` of the declared shape; otherwise one line saying what is wrong."""
    if not (fold_dir / "metrics.json").exists():
        return
    missing = [name for name in FOLD_FILES if not (fold_dir / name).is_file()]
    if missing:
        raise RunError(
            f"{fold_dir} is marked finished but {', '.join(missing)} is missing; "
            f"delete {fold_dir} to train that fold again"
        )
    try:
        read_metrics(fold_dir / "metrics.json")
    except SermtlError as exc:
        raise RunError(f"{exc}; delete {fold_dir} to train that fold again") from None


def check_tasks(manifest, folds: list[Fold], config: TrainConfig) -> None:
    """Every fold's training rows hold at least two classes of the label and, when an
    auxiliary task is asked for, of its column (one line naming ``--aux none`` otherwise)."""
    for fold in folds:
        labels = {manifest[u][config.label] for u in fold.train} - {None}
        if len(labels) < 2:
            raise RunError(
                f"fold {fold.fold}: --label {config.label} has {len(labels)} class(es) in the training rows; "
                "it needs at least 2"
            )
        if config.uses_aux:
            values = {manifest[u][config.aux] for u in fold.train} - {None}
            if len(values) < 2:
                raise RunError(
                    f"fold {fold.fold}: --aux {config.aux} has {len(values)} class(es) "
                    f"({', '.join(map(str, sorted(values, key=str))) or 'no values'}) in the training rows; "
                    "an auxiliary task needs at least 2: use --aux none"
                )


def _train_folds(
    session: StoreSession, out: Path, folds: list[Fold], config: TrainConfig, progress: bool, tensorboard: bool = False
) -> None:
    """Train, score and save each of ``folds`` that the run directory does not hold yet;
    ``history.csv`` grows after every epoch (and ``RUN/tensorboard/fold_<k>`` with
    ``tensorboard``), and a line reports each finished fold."""
    for fold in progress_bar(folds, desc="folds", unit="fold", enabled=progress):
        fold_dir = out / f"fold_{fold.fold}"
        if (fold_dir / "metrics.json").exists():
            continue
        fold_dir.mkdir(exist_ok=True)
        bank = session.bank(config.layer, config.device, config.network.input_norm)
        with contextlib.ExitStack() as stack:
            watchers = [functools.partial(write_history_csv, fold_dir / "history.csv")]
            if tensorboard:
                watchers.append(stack.enter_context(TensorBoardLog(out / "tensorboard" / f"fold_{fold.fold}")))
            outcome = train_fold(
                session.store,
                bank,
                fold,
                config,
                progress=progress,
                position=1,
                on_epoch=functools.partial(_notify, watchers),
            )
        save_checkpoint(fold_dir / "checkpoint.pt", outcome.checkpoint)
        write_predictions(fold_dir / "predictions.csv", outcome.predictions)
        _write_embeddings(fold_dir / "embeddings.npz", session.store.manifest, outcome, config)
        write_json(fold_dir / "history.json", outcome.history)
        write_json(fold_dir / "metrics.json", outcome.metrics)
        note(f"{out} fold {fold.fold}: {describe_fold(outcome.metrics)}", enabled=progress)


def _notify(watchers: list[Callable[[list[dict[str, Any]]], Any]], history: list[dict[str, Any]]) -> None:
    for watch in watchers:
        watch(history)


def describe_fold(metrics: dict[str, Any]) -> str:
    """``WA 61.20, UWA 58.33 (best epoch 7)`` (and the auxiliary accuracy when there is one)."""
    aux = f", aux accuracy {metrics['aux_accuracy']:.2f}" if metrics.get("aux_accuracy") is not None else ""
    return f"WA {metrics['wa']:.2f}, UWA {metrics['uwa']:.2f}{aux} (best epoch {metrics['best_epoch']})"


class TensorBoardLog:
    """Each epoch's record (:data:`HISTORY_COLUMNS`) as TensorBoard scalars in ``folder``
    (needs the tensorboard package)."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SermtlError(
                "--tensorboard needs the tensorboard package: pip install 'sermtl[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(folder))

    def __call__(self, history: list[dict[str, Any]]) -> None:
        record = history[-1]
        for key in HISTORY_COLUMNS[1:]:
            if isinstance(record.get(key), (int, float)):
                self.writer.add_scalar(key, record[key], record["epoch"])
        self.writer.flush()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.close()


#: The columns of ``history.csv``, in order; an epoch without validation leaves its columns empty.
HISTORY_COLUMNS = ("epoch", "alpha", "train_loss", "valid_loss", "valid_uwa")


def write_history_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """The epochs trained so far as CSV, rewritten whole (atomically) after every epoch, so
    it can be watched (``tail``, a spreadsheet, pandas) while the fold trains."""
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def _write_embeddings(path: Path, manifest, outcome, config: TrainConfig) -> None:
    """``embeddings.npz``: the test rows' ``ids``, ``emotion`` labels, auxiliary labels
    (``aux``, when the run has an auxiliary task) and emotion ``embeddings``."""
    import numpy as np

    ids = [row["utt_id"] for row in outcome.predictions]
    arrays = {
        "ids": np.array(ids, dtype=str),
        "emotion": np.array([row["true"] for row in outcome.predictions], dtype=str),
        "embeddings": np.asarray(outcome.embeddings, dtype=np.float32).reshape(len(ids), -1),
    }
    if config.uses_aux:
        arrays["aux"] = np.array([str(manifest[u][config.aux] or "") for u in ids], dtype=str)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)


def run_cv(
    store_path: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    protocol: Protocol | None = None,
    only_folds: list[int] | None = None,
    progress: bool = True,
    write_results: bool = True,
    exclusive: bool = True,
    session: StoreSession | None = None,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """Train and score every fold (or ``only_folds``) and write the run directory.

    Returns the content of ``results.json`` (over the folds done here; written to the run
    directory unless ``write_results`` is false). With ``exclusive`` the run directory is
    locked while this runs: a second ``cv`` into it is refused. A ``session`` of the same
    store shares its loaded features with other runs (it stays open).
    """
    out = Path(out_dir)
    with contextlib.ExitStack() as stack:
        if session is None:
            session = stack.enter_context(StoreSession(store_path))
        return _run_prepared(
            session, out, config, protocol, only_folds, progress, write_results, exclusive, tensorboard
        )


def _run_prepared(
    session: StoreSession,
    out: Path,
    config: TrainConfig,
    protocol: Protocol | None,
    only_folds: list[int] | None,
    progress: bool,
    write_results: bool,
    exclusive: bool,
    tensorboard: bool = False,
) -> dict[str, Any]:
    run = prepare_run(session, out, config, protocol, exclusive, only_folds)
    protocol, folds, config = run.protocol, run.folds, run.config
    with run.lock:
        wanted = [f for f in folds if only_folds is None or f.fold in only_folds]
        _train_folds(session, out, wanted, config, progress, tensorboard)
        per_fold = [read_metrics(out / f"fold_{f.fold}" / "metrics.json") for f in wanted]
        results = {
            "aux_accuracy": None,
            **average_folds(per_fold),
            "folds": per_fold,
            "protocol": protocol.name,
            "aux": config.aux,
            "store": store_record(session.spec),
        }
        if write_results:
            write_json(out / "results.json", results)
    return results


def run_repeats(
    run: Callable[..., dict[str, Any] | None],
    store_path: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    protocol: Protocol | None,
    repeats: int,
    only_folds: list[int] | None = None,
) -> dict[str, Any] | None:
    """Run ``run`` (:func:`run_cv`, or its torchrun form) once per seed ``config.seed`` …
    ``config.seed + repeats − 1``, each into its own run directory ``OUT/seed_<s>`` (its folds
    drawn from that seed too), and write ``OUT/repeats.json`` (:func:`summarise_repeats`) and,
    once every fold of every seed is finished, the seed ensemble (``OUT/ensemble.json``,
    :func:`trainer.ensembles.seed_ensemble`). Resumes like ``run``; returns ``{"per_seed":
    {seed: results}, "summary": …, "ensemble": … or None}``, or ``None`` where ``run`` does
    (torchrun ranks > 0)."""
    from trainer.ensembles import seed_ensemble

    check_value(RunOptions, "repeats", repeats)
    out = Path(out_dir)
    runs = {
        seed: run(
            store_path, out / f"seed_{seed}", dataclasses.replace(config, seed=seed), protocol, only_folds=only_folds
        )
        for seed in range(config.seed, config.seed + repeats)
    }
    if any(r is None for r in runs.values()):
        return None
    summary = summarise_repeats(runs)
    write_json(out / "repeats.json", summary)
    return {"per_seed": runs, "summary": summary, "ensemble": seed_ensemble(out, list(runs))}

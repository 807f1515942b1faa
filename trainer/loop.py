"""Training and evaluating one fold.

Per epoch ``e``: Adam steps over length-bucketed, randomly cropped batches with the loss
``(1 − α_e)·CE(AAM-softmax logits, emotion) + α_e·CE(aux logits, aux label)``
(:meth:`trainer.config.TrainConfig.alpha`), then the validation set is scored. The checkpoint
kept is the epoch with the best validation UWA (ties: the lower validation loss, the
emotion cross-entropy of the margin-free logits), or with ``average_best=K`` the mean
weights of the K best epochs (:class:`BestEpochs`); the test set is
scored once, with that checkpoint, after training. Without a validation set the last
epoch is kept. On CUDA the forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from featurestore.errors import ConfigError, describe_error
from featurestore.features.base import resolve_device
from featurestore.progress import progress_bar
from featurestore.store.reader import FeatureStore
from featurestore.version import __version__
from trainer.config import TrainConfig
from trainer.data import FeatureBank, make_batches
from trainer.folds import Fold
from trainer.metrics import evaluate, pattern_separability, unweighted_accuracy
from trainer.models.augment import SpecAugment
from trainer.network import NetworkConfig, SERNetwork
from trainer.speakers import choose_input_norm, speaker_groups
from trainer.tasks import Task

#: Manifest columns whose values split the test set into reported subsets.
SUBSET_COLUMNS = ("expression", "gender", "corpus")


@dataclasses.dataclass
class FoldOutcome:
    """What training one fold produced."""

    fold: int
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]
    history: list[dict[str, Any]]
    checkpoint: dict[str, Any]
    #: ``(len(test), embedding_dim)`` emotion embeddings of the test rows, in ``predictions`` order
    embeddings: np.ndarray


def _seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def resolved_aux(config: TrainConfig, manifest) -> TrainConfig:
    """``config`` with ``aux="auto"`` made concrete (:meth:`TrainConfig.resolve_aux`)."""
    return config.resolve_aux({c: set(manifest.column(c)) for c in ("expression",) if c in manifest.columns})


def resolve_config(
    config: TrainConfig, manifest, train_ids: Sequence[str] | None = None
) -> tuple[TrainConfig, dict[str, Any]]:
    """``config`` with its ``auto`` options made concrete for a store of this ``manifest``,
    and what was decided: ``aux`` from the store's expression classes
    (:meth:`TrainConfig.resolve_aux`), ``input_norm`` from the labels and speakers of the
    rows trained on, ``train_ids`` (default: every row; :func:`trainer.speakers.choose_input_norm`).
    The decisions are ``{"input_norm": {"auto": choice, "reason": text}}``, or empty."""
    config = resolved_aux(config, manifest)
    if config.network.input_norm != "auto":
        return config, {}
    choice, reason = choose_input_norm(manifest, manifest.ids() if train_ids is None else train_ids, config.label)
    network = dataclasses.replace(config.network, input_norm=choice)
    return dataclasses.replace(config, network=network), {"input_norm": {"auto": choice, "reason": reason}}


def resolved_config(config: TrainConfig, manifest, train_ids: Sequence[str] | None = None) -> TrainConfig:
    """:func:`resolve_config` without the record of its decisions."""
    return resolve_config(config, manifest, train_ids)[0]


def check_columns(store: FeatureStore, config: TrainConfig) -> None:
    """Refuse a store the network cannot train on (one vector per utterance), a
    ``--label``/``--aux`` column its manifest does not have (``aux="auto"`` is resolved
    before: :meth:`TrainConfig.resolve_aux`), and ``--input-norm speaker`` without a
    speaker for every utterance."""
    if store.attrs.get("frame_rate") == 0:
        raise ConfigError(
            f"store {store.path} holds one vector per utterance ({store.attrs.get('feature', {}).get('feature')}), "
            "not frames: fit the SVM on it with sermtl baseline, or extract a frame-level feature to train"
        )
    columns = store.manifest.columns
    for flag, column in (("--label", config.label), ("--aux", config.aux if config.uses_aux else None)):
        if column and column not in columns:
            raise ConfigError(f"{flag}: store {store.path} has no column {column!r} (columns: {', '.join(columns)})")
    if config.network.speaker_normalised:
        speaker_groups(store.manifest, store.ids())


def _autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a no-op context on the CPU."""
    return (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )


def build_tasks(store: FeatureStore, fold: Fold, config: TrainConfig) -> tuple[Task, Task | None]:
    """The emotion task and the auxiliary task, with classes from the fold's training rows."""
    check_columns(store, config)
    manifest = store.manifest
    emotion = Task.from_values(config.label, [manifest[u][config.label] for u in fold.train])
    aux = Task.from_values(config.aux, [manifest[u][config.aux] for u in fold.train]) if config.uses_aux else None
    return emotion, aux


@torch.no_grad()
def infer(network: SERNetwork, bank: FeatureBank, ids: Sequence[str], batch_size: int) -> dict[str, np.ndarray]:
    """Emotion probabilities, auxiliary probabilities and embeddings of ``ids``, in order.

    Parameters
    ----------
    network : SERNetwork
        Put in eval mode.
    bank : FeatureBank
        The features of ``ids``.
    ids : Sequence[str]
        The utterances, each scored whole.
    batch_size : int
        Utterances per forward pass.

    Returns
    -------
    dict[str, np.ndarray]
        ``emotion`` ``(len(ids), num_emotions)``, ``aux`` ``(len(ids), num_aux)`` (``None``
        without an auxiliary head) and ``embedding`` ``(len(ids), embedding_dim)``, float32;
        ``(0, 0)`` arrays (``aux`` ``None``) when ``ids`` is empty.
    """
    network.eval()
    position = {u: i for i, u in enumerate(ids)}
    results: dict[str, list] = {"emotion": [None] * len(ids), "aux": [None] * len(ids), "embedding": [None] * len(ids)}
    autocast = _autocast(bank.device)
    for batch, x, lengths in bank.iterate(make_batches(list(ids), bank.lengths(ids), batch_size)):
        with autocast:
            out = network(x, lengths)
        emotion = F.softmax(out["emotion_logits"].float(), dim=-1).cpu().numpy()
        aux = F.softmax(out["aux_logits"].float(), dim=-1).cpu().numpy() if "aux_logits" in out else None
        embedding = out["embedding"].float().cpu().numpy()
        for row, utt_id in enumerate(batch):
            i = position[utt_id]
            results["emotion"][i], results["embedding"][i] = emotion[row], embedding[row]
            results["aux"][i] = aux[row] if aux is not None else None
    return {
        "emotion": np.stack(results["emotion"]) if ids else np.zeros((0, 0)),
        "aux": np.stack(results["aux"]) if ids and results["aux"][0] is not None else None,
        "embedding": np.stack(results["embedding"]) if ids else np.zeros((0, 0)),
    }


#: At most this many training batches re-estimate the BatchNorm statistics (``batchnorm="precise"``).
PRECISE_BATCHNORM_BATCHES = 32


@torch.no_grad()
def recalibrate_batchnorm(network: SERNetwork, batches: Iterable[tuple[Any, torch.Tensor, torch.Tensor]]) -> None:
    """Precise BatchNorm: set every BatchNorm's running mean and variance to their plain
    average over ``batches`` (forward passes in training mode, no gradient, no augmentation).

    With momentum-averaged statistics an epoch of only a few steps leaves them lagging far
    behind the weights, and evaluation (which uses them) sees a different network.
    """
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    augment, network.augment = network.augment, None
    network.train()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    try:
        for _, x, lengths in batches:
            with _autocast(x.device):  # as in training
                network(x, lengths)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        network.augment = augment


class BestEpochs:
    """The ``k`` epochs with the best validation key ``(UWA, −loss)`` and their weights;
    ties keep the earlier epoch."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.kept: list[tuple[tuple[float, float], int, dict[str, torch.Tensor]]] = []

    def offer(self, key: tuple[float, float], epoch: int, network: torch.nn.Module) -> None:
        """Keep a copy of ``network``'s weights if ``epoch`` is among the ``k`` best so far."""
        if len(self.kept) < self.k or key > self.kept[-1][0]:
            self.kept.append((key, epoch, copy.deepcopy(network.state_dict())))
            self.kept.sort(key=lambda item: item[0], reverse=True)  # stable: equal keys stay in epoch order
            del self.kept[self.k :]

    @property
    def best(self) -> tuple[tuple[float, float], int]:
        """The best key and its epoch."""
        return self.kept[0][0], self.kept[0][1]

    @property
    def epochs(self) -> list[int]:
        return sorted(epoch for _, epoch, _ in self.kept)

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """The element-wise mean of the kept weights (integer buffers from the best epoch)."""
        states = [state for _, _, state in self.kept]
        return {
            name: torch.stack([s[name] for s in states]).mean(dim=0) if value.is_floating_point() else value
            for name, value in states[0].items()
        }


def _class_weights(targets: dict[str, int], num_classes: int, mode: str, device: torch.device) -> torch.Tensor | None:
    """``balanced``: ``(num_classes,)`` weights ``n / (classes · n_c)`` (scikit-learn's
    ``class_weight="balanced"``) of the training ``targets`` (-100: no label); ``none``: ``None``."""
    if mode == "none":  # else "balanced", the one other value TrainConfig allows
        return None
    counts = np.bincount([t for t in targets.values() if t >= 0], minlength=num_classes).astype(np.float64)
    weights = len(targets) / (num_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _augmentation(name: str) -> torch.nn.Module | None:
    """``specaugment``: time and feature-band masking of the training inputs; ``none``: no augmentation."""
    return SpecAugment() if name == "specaugment" else None  # "none": the other value TrainConfig allows


def _lr_schedule(name: str, epochs: int) -> Callable[[int], float]:
    """Learning-rate factor of epoch ``e``: ``constant`` 1, or ``cosine`` from 1 down towards 0."""
    schedules: dict[str, Callable[[int], float]] = {  # the values TrainConfig allows
        "constant": lambda epoch: 1.0,
        "cosine": lambda epoch: 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1))),
    }
    return schedules[name]


def _training_batches(
    bank: FeatureBank,
    ids: Sequence[str],
    config: TrainConfig,
    crop_frames: int,
    rng: np.random.Generator,
    limit: int | None = None,
) -> Iterator[tuple[Any, torch.Tensor, torch.Tensor]]:
    """An epoch's shuffled, length-bucketed batches of random crops (the first ``limit`` of them):
    ``(ids, features (B, [layers,] T, dim), lengths (B,))`` with ``T ≤ crop_frames``."""
    crop_lengths = np.minimum(bank.lengths(ids), crop_frames)
    batches = make_batches(list(ids), crop_lengths, config.batch_size, rng, config.batching)
    return bank.iterate(batches[:limit], crop_frames, rng)


def _train_epoch(
    network, optimizer, bank, ids, emotion_targets, aux_targets, alpha, config, rng, crop_frames, weights=None
) -> float:
    """One epoch of optimiser steps over the batches of ``ids`` (:func:`_training_batches`);
    the mean training loss per utterance, ``(1 − alpha)·emotion + alpha·aux`` where a batch has
    auxiliary labels."""
    network.train()
    total, count = 0.0, 0
    autocast = _autocast(bank.device)
    for batch, x, lengths in _training_batches(bank, ids, config, crop_frames, rng):
        y = torch.tensor([emotion_targets[u] for u in batch], device=bank.device)
        with autocast:
            out = network(x, lengths, y)
            loss = F.cross_entropy(
                out["emotion_logits"].float(), y, weight=weights, label_smoothing=config.label_smoothing
            )
            if aux_targets is not None:
                a = torch.tensor([aux_targets[u] for u in batch], device=bank.device)
                if (a != -100).any():
                    loss = (1 - alpha) * loss + alpha * F.cross_entropy(out["aux_logits"].float(), a, ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(batch)
        count += len(batch)
    return total / max(count, 1)


def train_fold(
    store: FeatureStore,
    bank: FeatureBank,
    fold: Fold,
    config: TrainConfig,
    progress: bool = True,
    position: int = 0,
    on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
) -> FoldOutcome:
    """Train on ``fold.train``, pick the epoch by ``fold.valid`` UWA, score ``fold.test``.

    Parameters
    ----------
    store : FeatureStore
        The store ``bank`` reads; its manifest gives the labels.
    bank : FeatureBank
        The features, on the training device.
    fold : Fold
        The ids to train on, pick the epoch by (may be empty: the last epoch is kept) and
        score (may be empty: nothing is scored).
    config : TrainConfig
        The training options; ``aux="auto"`` is resolved for this store.
    progress : bool
        Show a progress bar over the epochs.
    position : int
        Line of the progress bar (folds trained side by side).
    on_epoch : Callable[[list[dict[str, Any]]], None] or None
        Gets the history so far after every epoch.

    Returns
    -------
    FoldOutcome
        Test metrics, predictions and embeddings, the history and the checkpoint.
    """
    config = resolved_config(config, store.manifest, fold.train)
    rng = _seed_everything(config.seed + fold.fold)
    data = _fold_data(store, bank, fold, config)
    model = _build_model(data)
    history, selection = _train_epochs(data, model, rng, progress, position, on_epoch)
    best_epoch, best_valid_uwa = _keep_selected_weights(data, model.network, selection)
    metrics, predictions, embeddings = _test_scores(data, model.network)
    metrics.update(
        {
            "fold": fold.fold,
            "best_epoch": best_epoch,
            "best_valid_uwa": best_valid_uwa,
            "averaged_epochs": selection.epochs if len(selection.kept) > 1 else None,
        }
    )
    return FoldOutcome(
        fold.fold, metrics, predictions, history, _checkpoint(data, model.network, best_epoch), embeddings
    )


@dataclasses.dataclass
class _FoldData:
    """What one fold trains on and is scored with, under its resolved config."""

    store: FeatureStore
    bank: FeatureBank
    fold: Fold
    config: TrainConfig
    emotion_task: Task
    aux_task: Task | None
    #: Class index of each training row (-100: no label), per task.
    emotion_targets: dict[str, int]
    aux_targets: dict[str, int] | None
    #: The validation rows' labels, and their class indices ``(len(fold.valid),)`` int64.
    valid_truth: list[Any]
    valid_targets: np.ndarray
    #: Frames of a random training crop.
    crop_frames: int


def _fold_data(store: FeatureStore, bank: FeatureBank, fold: Fold, config: TrainConfig) -> _FoldData:
    """The tasks (classes from the training rows), targets and crop length of ``fold``."""
    emotion_task, aux_task = build_tasks(store, fold, config)
    manifest = store.manifest
    frame_rate = float(store.attrs.get("frame_rate") or 100.0)
    valid_truth = [manifest[u][config.label] for u in fold.valid]
    return _FoldData(
        store=store,
        bank=bank,
        fold=fold,
        config=config,
        emotion_task=emotion_task,
        aux_task=aux_task,
        emotion_targets={u: emotion_task.encode(manifest[u][config.label]) for u in fold.train},
        aux_targets={u: aux_task.encode(manifest[u][aux_task.column]) for u in fold.train} if aux_task else None,
        valid_truth=valid_truth,
        valid_targets=np.array([emotion_task.encode(v) for v in valid_truth], dtype=np.int64),
        crop_frames=max(1, int(round(config.crop_seconds * frame_rate))),
    )


@dataclasses.dataclass
class _FoldModel:
    """A fold's network and what trains it."""

    network: SERNetwork
    optimizer: torch.optim.Optimizer
    #: Learning-rate factor of each epoch (:func:`_lr_schedule`).
    lr_factor: Callable[[int], float]
    #: ``(num_emotions,)`` weights of the emotion loss, or ``None``.
    class_weights: torch.Tensor | None


def _build_model(data: _FoldData) -> _FoldModel:
    """A fresh network (its initial weights drawn from torch's seeded RNG), standardising
    with the training rows' statistics, and its optimiser."""
    bank, config = data.bank, data.config
    network = SERNetwork(
        NetworkConfig(
            input_size=bank.dim,
            num_emotions=len(data.emotion_task.classes),
            num_aux=len(data.aux_task.classes) if data.aux_task else 0,
            input_layers=bank.num_layers,
            utterance_size=int(data.store.attrs.get("utterance_dim") or 0),
            options=config.network,
        )
    ).to(bank.device)
    network.set_normalisation(*bank.statistics(data.fold.train))
    network.augment = _augmentation(config.augment)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return _FoldModel(
        network=network,
        optimizer=optimizer,
        lr_factor=_lr_schedule(config.lr_schedule, config.epochs),
        class_weights=_class_weights(
            data.emotion_targets, len(data.emotion_task.classes), config.class_weights, bank.device
        ),
    )


def _train_epochs(
    data: _FoldData,
    model: _FoldModel,
    rng: np.random.Generator,
    progress: bool,
    position: int,
    on_epoch: Callable[[list[dict[str, Any]]], None] | None,
) -> tuple[list[dict[str, Any]], BestEpochs]:
    """Every epoch of the fold: its history (one record per epoch, given to ``on_epoch`` as it
    grows) and the best epochs by validation."""
    config = data.config
    history: list[dict[str, Any]] = []
    selection = BestEpochs(config.average_best)
    bar = progress_bar(
        range(config.epochs),
        desc=f"fold {data.fold.fold}",
        unit="epoch",
        enabled=progress,
        position=position,
        leave=False,
    )
    for epoch in bar:
        record = _run_epoch(data, model, epoch, rng, selection)
        history.append(record)
        if on_epoch is not None:
            on_epoch(history)
        bar.set_postfix(
            loss=f"{record['train_loss']:.3f}",
            valid_uwa=f"{record.get('valid_uwa', float('nan')):.1f}",
            alpha=f"{record['alpha']:.2f}",
        )
    return history, selection


def _run_epoch(
    data: _FoldData, model: _FoldModel, epoch: int, rng: np.random.Generator, selection: BestEpochs
) -> dict[str, Any]:
    """Train epoch ``epoch`` (from 0), validate, offer the weights to ``selection``; the
    epoch's record. A non-finite training loss is a :class:`ConfigError`."""
    config, fold = data.config, data.fold
    alpha = config.alpha(epoch) if data.aux_task else 0.0
    for group in model.optimizer.param_groups:
        group["lr"] = config.lr * model.lr_factor(epoch)
    loss = _train_epoch(
        model.network,
        model.optimizer,
        data.bank,
        fold.train,
        data.emotion_targets,
        data.aux_targets,
        alpha,
        config,
        rng,
        data.crop_frames,
        model.class_weights,
    )
    if not math.isfinite(loss):
        raise ConfigError(
            f"fold {fold.fold}, epoch {epoch + 1}: the training loss is not finite ({loss}); "
            f"the fold is not saved (its history so far is): try a lower --lr than {config.lr:g}"
        )
    if config.batchnorm == "precise":
        _recalibrate(data, model.network, draw=epoch)
    record: dict[str, Any] = {"epoch": epoch + 1, "alpha": alpha, "train_loss": loss}
    if fold.valid:
        record.update(_validation_scores(data, model.network))
        selection.offer((record["valid_uwa"], -record["valid_loss"]), epoch + 1, model.network)
    return record


def _validation_scores(data: _FoldData, network: SERNetwork) -> dict[str, float]:
    """``valid_uwa`` (percent) and ``valid_loss`` (the emotion cross-entropy of the margin-free
    logits over the labelled rows) of ``network`` on ``fold.valid``."""
    probs = infer(network, data.bank, data.fold.valid, data.config.batch_size)["emotion"]
    predicted = [data.emotion_task.classes[i] for i in probs.argmax(axis=1)]
    known = data.valid_targets >= 0
    return {
        "valid_uwa": 100.0 * unweighted_accuracy(data.valid_truth, predicted),
        "valid_loss": (
            float(-np.log(np.maximum(probs[known, data.valid_targets[known]], 1e-12)).mean()) if known.any() else 0.0
        ),
    }


def _recalibrate(data: _FoldData, network: SERNetwork, draw: int) -> None:
    """Precise BatchNorm statistics from training batches drawn by ``(seed, fold, draw)``."""
    rng_draw = np.random.default_rng([data.config.seed, data.fold.fold, draw])
    recalibrate_batchnorm(
        network,
        _training_batches(
            data.bank, data.fold.train, data.config, data.crop_frames, rng_draw, PRECISE_BATCHNORM_BATCHES
        ),
    )


def _keep_selected_weights(data: _FoldData, network: SERNetwork, selection: BestEpochs) -> tuple[int, float | None]:
    """Load the weights of the best epoch (or the mean of the ``average_best`` best) into
    ``network``; the best epoch and its validation UWA, or the last epoch and ``None``
    without a validation set."""
    if not selection.kept:
        return data.config.epochs, None
    (best_valid_uwa, _), best_epoch = selection.best
    network.load_state_dict(selection.averaged_state())
    if len(selection.kept) > 1:  # averaged weights need their own BatchNorm statistics
        _recalibrate(data, network, draw=data.config.epochs)
    return best_epoch, best_valid_uwa


def _test_scores(data: _FoldData, network: SERNetwork) -> tuple[dict[str, Any], list[dict[str, Any]], np.ndarray]:
    """:func:`score` on ``fold.test``; for a fold without one, no metrics, no predictions and
    ``(0, embedding_dim)`` embeddings."""
    if data.fold.test:
        return score(
            data.store, data.bank, network, data.fold.test, data.emotion_task, data.aux_task, data.config.batch_size
        )
    # a deployable model trained on every row (``train --all-data``): nothing to score
    return {}, [], np.zeros((0, data.config.network.embedding_dim), np.float32)


def _checkpoint(data: _FoldData, network: SERNetwork, best_epoch: int) -> dict[str, Any]:
    """The fold's checkpoint: ``network``'s weights on the CPU, what rebuilds it and where its
    features came from."""
    store, config, aux_task = data.store, data.config, data.aux_task
    return {
        "sermtl_version": __version__,
        "network": dataclasses.asdict(network.config),
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "emotions": list(data.emotion_task.classes),
        "aux": {"column": aux_task.column, "classes": list(aux_task.classes)} if aux_task else None,
        "label": config.label,
        "layer": data.bank.layer,
        "feature": store.attrs.get("feature"),
        "store_fingerprint": store.attrs.get("fingerprint"),
        "store_dtype": store.attrs.get("dtype"),
        "train_config": config.to_dict(),
        "fold": data.fold.fold,
        "best_epoch": best_epoch,
    }


def score(
    store: FeatureStore,
    bank: FeatureBank,
    network: SERNetwork,
    ids: Sequence[str],
    emotion_task: Task,
    aux_task: Task | None,
    batch_size: int,
) -> tuple[dict[str, Any], list[dict[str, Any]], np.ndarray]:
    """Metrics (percent), per-utterance predictions and emotion embeddings of ``network`` on ``ids``.

    Parameters
    ----------
    store : FeatureStore
        Its manifest gives the labels and the subsets (:data:`SUBSET_COLUMNS`).
    bank : FeatureBank
        The features of ``ids``.
    network : SERNetwork
        The trained network.
    ids : Sequence[str]
        The utterances to score.
    emotion_task, aux_task : Task, Task or None
        The classes the network's heads predict.
    batch_size : int
        Utterances per forward pass.

    Returns
    -------
    tuple[dict[str, Any], list[dict[str, Any]], np.ndarray]
        The metrics, one prediction row per id, and the ``(len(ids), embedding_dim)``
        embeddings, in ``ids`` order.
    """
    manifest = store.manifest
    out = infer(network, bank, ids, batch_size)
    truth = [manifest[u][emotion_task.column] for u in ids]
    predicted = [emotion_task.classes[i] for i in out["emotion"].argmax(axis=1)]
    aux_truth = aux_predicted = None
    if aux_task is not None:
        aux_truth = [manifest[u][aux_task.column] for u in ids]
        aux_predicted = [aux_task.classes[i] for i in out["aux"].argmax(axis=1)]
    subsets = {
        c: [manifest[u][c] for u in ids]
        for c in SUBSET_COLUMNS
        if c in manifest.columns and len({manifest[u][c] for u in ids} - {None}) > 1
    }
    metrics = evaluate(
        truth, predicted, list(emotion_task.classes), subsets=subsets, aux_true=aux_truth, aux_pred=aux_predicted
    )
    metrics["separability"] = {}
    if len(set(truth)) > 1:  # a test set of one class (a tiny leave-one-speaker-out fold) has no pairs
        metrics["separability"]["emotion"] = pattern_separability(out["embedding"], truth)
    if "expression" in manifest.columns and len({manifest[u]["expression"] for u in ids} - {None}) > 1:
        metrics["separability"]["expression"] = pattern_separability(
            out["embedding"], [manifest[u]["expression"] for u in ids]
        )
    predictions = []
    for i, utt_id in enumerate(ids):
        row = {
            "utt_id": utt_id,
            "true": truth[i],
            "pred": predicted[i],
            **{f"p_{c}": float(p) for c, p in zip(emotion_task.classes, out["emotion"][i])},
        }
        if aux_task is not None:
            row.update({"aux_true": aux_truth[i], "aux_pred": aux_predicted[i]})
        predictions.append(row)
    return metrics, predictions, out["embedding"]


def load_network(checkpoint: dict[str, Any], device: str = "cpu") -> SERNetwork:
    """Rebuild the trained network of a checkpoint, in eval mode on ``device``."""
    try:
        network = SERNetwork(NetworkConfig.from_dict(checkpoint["network"]))
        network.load_state_dict(checkpoint["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise ConfigError(f"checkpoint does not fit this version's network ({describe_error(exc)})") from None
    return network.to(resolve_device(device)).eval()

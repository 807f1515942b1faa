"""Predicting emotions with a trained model: :class:`Predictor`, loaded once.

A checkpoint records the feature config of the store it was trained on; the same
extractor is rebuilt from it (:func:`featurestore.features.extractor_from_description`,
which refuses if, e.g., the model weights differ), waves are featurised exactly as during
extraction, rounded to the store's dtype, and passed through the network, whose input
normalisation travels inside the checkpoint. A run directory gives an ensemble: every
fold's checkpoint, their emotion (and auxiliary) probabilities averaged. A model trained
with ``--input-norm speaker`` needs its speaker's statistics: the waves of one call are
taken as one speaker's (give each speaker's recordings in a call of their own).

Arrays are checked as the CLI checks audio files, before anything is resampled: the
sampling rate an integer in :data:`~featurestore.audio.SAMPLE_RATE_RANGE`, each wave 1-D
and finite, at most ``max_duration`` seconds long (default
:data:`~featurestore.audio.DEFAULT_MAX_DURATION`) and long enough for the extractor; a
model folder (``train --all-data``) or run directory is read through
:func:`trainer.checkpoint.load_checkpoint`. Any problem is one :class:`SermtlError` line.

>>> predictor = Predictor.load("runs/iemocap_w2v2_mtl")           # doctest: +SKIP
>>> predictor.predict([wave], sample_rate=44100)[0]["emotion"]     # doctest: +SKIP
'happy'
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featurestore.audio import DEFAULT_MAX_DURATION, TARGET_SR, check_audio_size, load_audio
from featurestore.errors import AudioError, ModelError, describe_error, quote
from featurestore.features import extractor_from_description
from trainer.checkpoint import load_checkpoint
from trainer.loop import load_network

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".mp4", ".m4a")


def audio_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Files given directly, plus audio files found (recursively) in given folders."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(
                p for p in item.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")
            )
        else:
            files.append(item)
    if not files:
        raise AudioError(f"no audio files in {', '.join(map(str, inputs))}")
    return files


def seed_members(source: Path) -> list[Path]:
    """The ``seed_<s>/checkpoint.pt`` of a seed ensemble's model folder (``train --all-data
    --repeats N``), in natural order of the seeds; none for a folder without any (a
    ``cv --repeats`` folder's ``seed_<s>`` hold runs). Where some ``seed_<s>`` holds one,
    a ``seed_<s>`` without it is one line (a member lost)."""
    seeds = {
        int(match.group(1)): path
        for path in source.glob("seed_*")
        if path.is_dir() and (match := re.fullmatch(r"seed_(0|[1-9][0-9]{0,9})", path.name))
    }
    if not any((path / "checkpoint.pt").exists() for path in seeds.values()):
        return []
    missing = next((path for _, path in sorted(seeds.items()) if not (path / "checkpoint.pt").is_file()), None)
    if missing is not None:
        raise ModelError(f"{source}: {missing.name} holds no checkpoint.pt (a member of the seed ensemble is missing)")
    return [seeds[s] / "checkpoint.pt" for s in sorted(seeds)]


def checkpoint_paths(source: str | Path) -> list[Path]:
    """``source`` itself for a checkpoint file; for a model folder (one holding
    ``checkpoint.pt`` or ``MODEL_CARD.md``) its ``checkpoint.pt``, or for a seed ensemble's
    (``train --all-data --repeats N``) every ``seed_<s>/checkpoint.pt`` (:func:`seed_members`);
    for a run directory its folds' checkpoints (``fold_<k>`` folders)."""
    source = Path(source)
    if not source.is_dir():
        return [source]
    if not (source / "checkpoint.pt").exists() and (members := seed_members(source)):
        return members
    if (source / "checkpoint.pt").exists() or (source / "MODEL_CARD.md").exists():  # a model folder (train --all-data)
        return [source / "checkpoint.pt"]
    folds = {
        int(match.group(1)): path
        for path in source.glob("fold_*/checkpoint.pt")
        if (match := re.fullmatch(r"fold_([1-9][0-9]{0,5})", path.parent.name))
    }
    if not folds:
        raise ModelError(f"{source}: no fold_*/checkpoint.pt (not a run directory with finished folds)")
    return [folds[k] for k in sorted(folds)]


def check_wave(wave: Any, sample_rate: Any, name: str, max_duration: float | None = DEFAULT_MAX_DURATION) -> np.ndarray:
    """``wave`` as float32, checked as the CLI checks an audio file's header and samples
    (:func:`featurestore.audio.load_audio`): ``sample_rate`` an integer in
    :data:`~featurestore.audio.SAMPLE_RATE_RANGE`, a 1-D array of finite samples, at most
    ``max_duration`` seconds (``None``: no cap). One :class:`~featurestore.errors.AudioError` line naming ``name`` otherwise."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise AudioError(f"{name}: sample_rate must be an integer number of Hz, got {quote(sample_rate)}")
    try:
        wave = np.asarray(wave, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise AudioError(f"{name}: expected a 1-D array of samples ({describe_error(exc)})") from None
    if wave.ndim != 1:
        raise AudioError(f"{name}: expected a 1-D array of finite samples, got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise AudioError(f"{name}: NaN or infinite samples")
    check_audio_size(name, int(sample_rate), len(wave) / sample_rate if sample_rate > 0 else None, max_duration)
    return wave


def _select_layers(features: np.ndarray, layer: int | str | None) -> np.ndarray:
    """Pick the layer(s) the network was trained on from ``(layers, frames, dim)`` features."""
    if layer == "weighted":
        return features
    return features[layer if layer is not None else 0]


def _speaker_normalise(features: list[np.ndarray]) -> list[np.ndarray]:
    """``--input-norm speaker`` models: the waves of one call are taken as one speaker's,
    standardised with the mean/std over all their frames (per layer)."""
    if len(features) == 1:
        warnings.warn(
            "a speaker-normalised model: the statistics of a single recording stand for its speaker's; "
            "give several recordings of the same speaker in one call",
            stacklevel=3,
        )
    frames = np.concatenate([f.astype(np.float64) for f in features], axis=-2)
    mean, std = frames.mean(axis=-2, keepdims=True), np.maximum(frames.std(axis=-2, keepdims=True), 1e-5)
    return [((f - mean) / std).astype(np.float32) for f in features]


class Predictor:
    """A trained model loaded once (:meth:`load`), for any number of :meth:`predict` and
    :meth:`embed` calls. ``source`` names the checkpoint(s) in error lines, ``names`` each checkpoint's file (refused when the
    features its extractor gives do not fit its network)."""

    def __init__(
        self,
        checkpoints: list[dict[str, Any]],
        device: str = "cpu",
        dtype: str | None = None,
        source: str = "checkpoint",
        names: Sequence[str] | None = None,
    ) -> None:
        first = checkpoints[0]
        names = list(names) if names is not None else [f"{source} #{k}" for k in range(1, len(checkpoints) + 1)]
        for name, other in zip(names[1:], checkpoints[1:]):
            for key in ("feature", "emotions", "aux", "layer"):
                if other.get(key) != first.get(key):
                    raise ModelError(
                        f"{name} and {names[0]} differ in {key!r}: they are not folds or seeds of one model"
                    )
        self.checkpoints = checkpoints
        self.emotions: list[str] = list(first["emotions"])
        self.aux: dict[str, Any] | None = first.get("aux")
        self.extractor = extractor_from_description(first["feature"], device=device)
        self.networks = [load_network(c, device) for c in checkpoints]
        self.device = next(self.networks[0].parameters()).device
        self.dtype = np.dtype(dtype or first.get("store_dtype") or "float32")
        self.speaker_normalised = self.networks[0].config.options.speaker_normalised
        self._check_fit(source)

    @classmethod
    def load(cls, source: str | Path, device: str = "cpu", dtype: str | None = None) -> Predictor:
        """A checkpoint file, a model folder (``train --all-data``; with ``--repeats N`` the
        ensemble of its seeds) or a run directory (the ensemble of its folds)."""
        paths = checkpoint_paths(source)
        checkpoints = [load_checkpoint(path) for path in paths]
        return cls(checkpoints, device=device, dtype=dtype, source=str(source), names=[str(p) for p in paths])

    def features(
        self,
        waves: Sequence[np.ndarray],
        sample_rate: int = TARGET_SR,
        names: Sequence[str] | None = None,
        max_duration: float | None = DEFAULT_MAX_DURATION,
    ) -> list[np.ndarray]:
        """The network inputs of 1-D ``waves`` at ``sample_rate``, as the store held them;
        checked as :func:`check_wave` says before any is resampled."""
        names = names or [f"wave {i}" for i in range(len(waves))]
        checked = [check_wave(wave, sample_rate, name, max_duration) for name, wave in zip(names, waves)]
        out = []
        for name, wave in zip(names, checked):
            if sample_rate != TARGET_SR:
                import soxr

                wave = soxr.resample(wave, sample_rate, TARGET_SR, quality="HQ").astype(np.float32, copy=False)
            self.extractor.check_length(len(wave), name)
            stored = self.extractor.extract_batch([wave])[0].astype(self.dtype).astype(np.float32)
            out.append(_select_layers(stored, self.checkpoints[0]["layer"]))
        return _speaker_normalise(out) if self.speaker_normalised else out

    def _check_fit(self, source: str) -> None:
        """One line naming ``source`` (and the member) when the extractor's features do not
        fit a network: every member of an ensemble is checked."""
        layer, extractor = self.checkpoints[0]["layer"], self.extractor
        for k, network in enumerate(self.networks):
            config = network.config
            where = source if len(self.networks) == 1 else f"{source} (member {k + 1})"
            if (isinstance(layer, int) and layer >= extractor.num_layers) or (
                layer == "weighted" and extractor.num_layers != config.input_layers
            ):
                raise ModelError(
                    f"{where}: layer {layer!r} (network.input_layers {config.input_layers}) does not fit "
                    f"its {extractor.name} features' {extractor.num_layers} layer(s)"
                )
            if extractor.utterance_dim != config.utterance_size:
                raise ModelError(
                    f"{where}: network.utterance_size {config.utterance_size} does not fit its {extractor.name} "
                    f"features ({extractor.utterance_dim} utterance-level values per frame)"
                )
            if extractor.dim != config.input_size:
                raise ModelError(
                    f"{where}: network.input_size {config.input_size} does not fit its {extractor.name} "
                    f"features ({extractor.dim} values per frame)"
                )

    @torch.no_grad()
    def _outputs(self, features: list[np.ndarray]) -> list[list[dict[str, np.ndarray]]]:
        """Per wave, per network: softmaxed emotion/aux probabilities and the embedding."""
        results = []
        for frames in features:
            x = torch.from_numpy(frames)[None].to(self.device)
            lengths = torch.tensor([x.shape[-2]], device=self.device)
            per_network = []
            for network in self.networks:
                out = network(x, lengths)
                item = {
                    "emotion": torch.softmax(out["emotion_logits"].float(), -1)[0].cpu().numpy(),
                    "embedding": out["embedding"].float()[0].cpu().numpy(),
                }
                if "aux_logits" in out:
                    item["aux"] = torch.softmax(out["aux_logits"].float(), -1)[0].cpu().numpy()
                per_network.append(item)
            results.append(per_network)
        return results

    def predict(
        self,
        waves: Sequence[np.ndarray],
        sample_rate: int = TARGET_SR,
        max_duration: float | None = DEFAULT_MAX_DURATION,
    ) -> list[dict[str, Any]]:
        """One dict per wave: ``emotion``, ``emotion_probs`` and, with an auxiliary task,
        ``<column>`` and ``<column>_probs`` (the keys of ``sermtl predict --json``)."""
        features = self.features(waves, sample_rate, max_duration=max_duration)
        return [self._row(outputs) for outputs in self._outputs(features)]

    def embed(
        self,
        waves: Sequence[np.ndarray],
        sample_rate: int = TARGET_SR,
        max_duration: float | None = DEFAULT_MAX_DURATION,
    ) -> np.ndarray:
        """``(len(waves), dim)`` emotion embeddings; for an ensemble of K folds, the folds'
        embeddings side by side (``K · embedding_dim`` values)."""
        outputs = self._outputs(self.features(waves, sample_rate, max_duration=max_duration))
        return np.stack([np.concatenate([item["embedding"] for item in per_network]) for per_network in outputs])

    def predict_files(
        self, inputs: Sequence[str | Path], max_duration: float | None = DEFAULT_MAX_DURATION
    ) -> list[dict[str, Any]]:
        """:meth:`predict` for audio files and folders (``file`` added to each dict)."""
        files = audio_files(inputs)
        waves = [load_audio(path, max_duration=max_duration) for path in files]
        features = self.features(waves, TARGET_SR, names=[str(p) for p in files], max_duration=max_duration)
        return [{"file": str(path), **self._row(outputs)} for path, outputs in zip(files, self._outputs(features))]

    def _row(self, per_network: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        emotion = np.mean([item["emotion"] for item in per_network], axis=0)
        row: dict[str, Any] = {
            "emotion": self.emotions[int(emotion.argmax())],
            "emotion_probs": dict(zip(self.emotions, map(float, emotion))),
        }
        if self.aux:
            aux = np.mean([item["aux"] for item in per_network], axis=0)
            column, classes = self.aux["column"], self.aux["classes"]
            row.update({column: classes[int(aux.argmax())], f"{column}_probs": dict(zip(classes, map(float, aux)))})
        return row


def predict_files(
    checkpoint_path: str | Path,
    inputs: Sequence[str | Path],
    device: str = "cpu",
    dtype: str | None = None,
    max_duration: float | None = DEFAULT_MAX_DURATION,
) -> list[dict[str, Any]]:
    """:meth:`Predictor.predict_files` of a checkpoint or run directory loaded for this call."""
    return Predictor.load(checkpoint_path, device=device, dtype=dtype).predict_files(inputs, max_duration=max_duration)


def format_predictions(rows: list[dict[str, Any]]) -> str:
    """``sermtl predict``'s table: per file, the emotion, its probabilities and the auxiliary
    task's answer, tab-separated."""
    lines = []
    for row in rows:
        probs = " ".join(f"{k}={v:.2f}" for k, v in row["emotion_probs"].items())
        extra = "".join(
            f"  {k}={v}"
            for k, v in row.items()
            if k not in ("file", "emotion", "emotion_probs") and not k.endswith("_probs")
        )
        lines.append(f"{row['file']}\t{row['emotion']}\t{probs}{extra}")
    return "\n".join(lines)

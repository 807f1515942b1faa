"""Predicting emotions of audio files with a trained checkpoint.

The checkpoint records the feature config of the store it was trained on; the same
extractor is rebuilt from it (:func:`featurestore.features.extractor_from_description`,
which refuses if, e.g., the model weights differ), the files are decoded and featurised
exactly as during extraction, rounded to the store's dtype, and passed through the
network, whose input normalisation travels inside the checkpoint. A model trained with
``--input-norm speaker`` needs its speaker's statistics: the files of one call are taken
as one speaker's (give each speaker's files in a call of their own).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from featurestore.audio import DEFAULT_MAX_DURATION, load_audio
from featurestore.errors import SermtlError
from featurestore.features import extractor_from_description
from trainer.checkpoint import load_checkpoint
from trainer.loop import load_network

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".mp4", ".m4a")


def audio_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Files given directly, plus audio files found (recursively) in given folders."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("."))
        else:
            files.append(item)
    if not files:
        raise SermtlError(f"no audio files in {', '.join(map(str, inputs))}")
    return files


def _select_layers(features: np.ndarray, layer: int | str | None) -> np.ndarray:
    """Pick the layer(s) the network was trained on from ``(layers, frames, dim)`` features."""
    if layer == "weighted":
        return features
    return features[layer if layer is not None else 0]


def _speaker_normalise(features: list[np.ndarray]) -> list[np.ndarray]:
    """``--input-norm speaker`` checkpoints: the files of one call are taken as one
    speaker's, standardised with the mean/std over all their frames (per layer)."""
    if len(features) == 1:
        warnings.warn("a speaker-normalised model: the statistics of a single file stand for its speaker's; "
                      "give several files of the same speaker in one call", stacklevel=3)
    frames = np.concatenate([f.astype(np.float64) for f in features], axis=-2)
    mean, std = frames.mean(axis=-2, keepdims=True), np.maximum(frames.std(axis=-2, keepdims=True), 1e-5)
    return [((f - mean) / std).astype(np.float32) for f in features]


@torch.no_grad()
def predict_files(checkpoint_path: str | Path, inputs: Sequence[str | Path], device: str = "cpu",
                  dtype: str | None = None, max_duration: float | None = DEFAULT_MAX_DURATION) -> list[dict[str, Any]]:
    """Emotion (and auxiliary) probabilities for each audio file, as dicts (audio longer
    than ``max_duration`` seconds, or too short for one analysis window, is refused). A
    checkpoint trained with ``--input-norm speaker`` takes the files as one speaker's."""
    checkpoint = load_checkpoint(checkpoint_path)
    extractor = extractor_from_description(checkpoint["feature"], device=device)
    network = load_network(checkpoint, device)
    store_dtype = np.dtype(dtype or checkpoint.get("store_dtype") or "float32")
    files = audio_files(inputs)
    features = []
    for path in files:
        wave = load_audio(path, max_duration=max_duration)
        extractor.check_length(len(wave), str(path))
        stored = extractor.extract_batch([wave])[0].astype(store_dtype).astype(np.float32)
        features.append(_select_layers(stored, checkpoint["layer"]))
    if network.config.options.input_norm == "speaker":
        features = _speaker_normalise(features)
    rows = []
    for path, frames in zip(files, features):
        x = torch.from_numpy(frames)[None].to(next(network.parameters()).device)
        out = network(x, torch.tensor([x.shape[-2]], device=x.device))
        emotion = torch.softmax(out["emotion_logits"].float(), -1)[0].cpu().numpy()
        row: dict[str, Any] = {"file": str(path), "emotion": checkpoint["emotions"][int(emotion.argmax())],
                               "emotion_probs": dict(zip(checkpoint["emotions"], map(float, emotion)))}
        if checkpoint.get("aux"):
            aux = torch.softmax(out["aux_logits"].float(), -1)[0].cpu().numpy()
            classes = checkpoint["aux"]["classes"]
            row.update({checkpoint["aux"]["column"]: classes[int(aux.argmax())],
                        f"{checkpoint['aux']['column']}_probs": dict(zip(classes, map(float, aux)))})
        rows.append(row)
    return rows

"""Checkpoints: tensors and plain data only, written atomically, read without running code.

A checkpoint is a dict of plain values (str, numbers, lists, dicts, ``None``) and tensors.
It is read with ``torch.load(weights_only=True)``, whose unpickler builds only those types
and refuses any other object, so a checkpoint crafted to call a function when loaded
(``os.system`` in a ``__reduce__``) is refused in one line and runs nothing.

What is read is then checked, before any network is built or any tensor allocated for it,
against :data:`CHECKPOINT`, the layout written by :func:`trainer.loop.train_fold`: network
sizes within the caps of :data:`trainer.network.NETWORK` (at most
:data:`~trainer.limits.MAX_CLASSES` classes), class names that are text and as many as
the network's outputs (emotion and auxiliary), and a ``state_dict`` whose tensors have
exactly the shapes the declared network needs (computed on the ``meta`` device, which
allocates nothing) and finite values. Any problem is one :class:`SermtlError` line naming
the file and the key.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from featurestore.atomic import atomic_write
from featurestore.errors import ModelError, describe_error, quote
from featurestore.schema import ListOf, MapOf, Number, OneOf, Record, Shape, Text, check
from featurestore.store.base import STORE_DTYPES
from trainer.limits import MAX_CLASSES
from trainer.network import MAX_INPUT_LAYERS, NETWORK, NetworkConfig, SERNetwork


@dataclasses.dataclass(frozen=True)
class TensorValue(Shape):
    """A tensor (its shape is checked against the network, see :func:`check_state_dict`)."""

    def describe(self) -> str:
        return "a tensor"

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        return None if isinstance(value, torch.Tensor) else (where, f"expected a tensor, got {quote(value)}")


#: A task's class names (as many as the network's outputs, see :func:`_as_many_classes`).
CLASS_NAMES = ListOf(Text(max_length=256), min_items=1, max_items=MAX_CLASSES)


def _as_many_classes(value: dict) -> tuple[str, str] | None:
    """Rule: as many class names as the network has outputs, emotion and auxiliary."""
    network, aux = value["network"], value.get("aux")
    if len(value["emotions"]) != network["num_emotions"]:
        return (
            "emotions",
            f"{len(value['emotions'])} class names, but network.num_emotions is {network['num_emotions']}",
        )
    classes, num_aux = len(aux["classes"]) if aux else 0, network.get("num_aux") or 0
    if classes != num_aux:
        return "aux.classes", f"{classes} class names, but network.num_aux is {num_aux}"
    return None


def _distinct_classes(value: dict) -> tuple[str, str] | None:
    """Rule: no class name twice (its probabilities would be merged under one name)."""
    for key, names in (("emotions", value["emotions"]), ("aux.classes", (value.get("aux") or {}).get("classes", []))):
        name, count = Counter(names).most_common(1)[0] if names else (None, 0)
        if count > 1:
            return key, f"the class name {quote(name)} appears {count} times"
    return None


#: A checkpoint's layout (other keys, e.g. ``train_config`` and ``fold``, are descriptive).
CHECKPOINT = Record(
    {
        "network": NETWORK,
        "state_dict": MapOf(TensorValue(), max_items=10_000),  # a network has ~150; the walk stays short
        "emotions": CLASS_NAMES,
        "aux": Record({"column": Text(max_length=256), "classes": CLASS_NAMES}, optional=True),
        "feature": Record({"feature": Text(max_length=64)}),
        "layer": OneOf((Number(0, MAX_INPUT_LAYERS - 1, integer=True), Text(choices=("weighted",))), optional=True),
        "label": Text(max_length=256),
        "store_dtype": Text(choices=STORE_DTYPES, optional=True),
    },
    rules=(_as_many_classes, _distinct_classes),
)


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` atomically (no half-written file on a crash)."""
    with atomic_write(path, "wb") as handle:
        torch.save(checkpoint, handle)


def expected_shapes(config: NetworkConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of the ``state_dict`` of the network ``config`` declares,
    from a network built on the ``meta`` device (no memory is allocated)."""
    with torch.device("meta"):
        network = SERNetwork(config)
    return {key: tuple(tensor.shape) for key, tensor in network.state_dict().items()}


def check_state_dict(state_dict: dict[str, torch.Tensor], config: NetworkConfig, name: str) -> None:
    """One line naming ``name`` and the key unless ``state_dict`` holds exactly the tensors
    of the network ``config`` declares, in their shapes, with finite values."""
    expected = expected_shapes(config)
    missing = next((key for key in expected if key not in state_dict), None)
    if missing is not None:
        raise ModelError(f"{name}: state_dict.{missing}: missing (the network declared needs it)")
    extra = next((key for key in state_dict if key not in expected), None)
    if extra is not None:
        raise ModelError(f"{name}: state_dict: unknown key {quote(extra)} (not a tensor of the network declared)")
    for key, shape in expected.items():
        if tuple(state_dict[key].shape) != shape:
            raise ModelError(f"{name}: state_dict.{key}: expected shape {shape}, got {tuple(state_dict[key].shape)}")
    for key, tensor in state_dict.items():  # shapes known, so this reads no more than the network holds
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"{name}: state_dict.{key}: holds NaN or infinite values")


def _read(path: Path) -> Any:
    """``torch.load`` of ``path`` as data only; one line when it cannot be read."""
    if not path.is_file():
        raise ModelError(
            f"not a sermtl checkpoint: {path}: not a regular file" if path.exists() else f"checkpoint not found: {path}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        unsafe = "weights_only" in str(exc) or "Unsupported global" in str(exc)
        what = (
            "it holds objects other than tensors and plain data (refused: loading it could run code)"
            if unsafe
            else describe_error(exc)
        )
        raise ModelError(f"not a sermtl checkpoint: {path}: {what}") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``sermtl cv``/``train``, loaded as data only and checked
    (:data:`CHECKPOINT`, :func:`check_state_dict`); one-line :class:`SermtlError` naming the
    file and the key when it is missing, holds anything but tensors and plain data, or
    differs from what a checkpoint holds."""
    path = Path(path)
    checkpoint = _read(path)
    if not isinstance(checkpoint, dict):
        raise ModelError(f"not a sermtl checkpoint: {path}: holds a {type(checkpoint).__name__}, not a dict")
    name = f"not a sermtl checkpoint: {path}"
    check(checkpoint, CHECKPOINT, name, ModelError)
    check_state_dict(checkpoint["state_dict"], NetworkConfig.from_dict(checkpoint["network"], name), name)
    return checkpoint

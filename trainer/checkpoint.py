"""Checkpoints: tensors and plain data only, written atomically, read without running code.

A checkpoint is a dict of plain values (str, numbers, lists, dicts, ``None``) and tensors.
It is read with ``torch.load(weights_only=True)``, whose unpickler builds only those types
and refuses any other object, so a checkpoint crafted to call a function when loaded
(``os.system`` in a ``__reduce__``) is refused in one line and runs nothing. What is read
is then checked against the layout written by :func:`trainer.loop.train_fold`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from featurestore.atomic import atomic_write
from featurestore.errors import SermtlError, describe_error

#: Keys every checkpoint holds, with the type of their value.
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "network": dict,
    "state_dict": dict,
    "emotions": list,
    "feature": dict,
    "layer": (int, str, type(None)),
    "label": str,
}


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` atomically (no half-written file on a crash)."""
    with atomic_write(path, "wb") as handle:
        torch.save(checkpoint, handle)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``sermtl cv``/``train``, loaded as data only; one-line
    :class:`SermtlError` naming the file when it is missing, holds anything but tensors and
    plain data, or lacks what a checkpoint holds."""
    path = Path(path)
    if not path.is_file():
        raise SermtlError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        unsafe = "weights_only" in str(exc) or "Unsupported global" in str(exc)
        what = "it holds objects other than tensors and plain data (refused: loading it could run code)" if unsafe \
            else describe_error(exc)
        raise SermtlError(f"not a sermtl checkpoint: {path}: {what}") from None
    if not isinstance(checkpoint, dict):
        raise SermtlError(f"not a sermtl checkpoint: {path}: holds a {type(checkpoint).__name__}, not a dict")
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(checkpoint.get(key), kind):
            raise SermtlError(f"not a sermtl checkpoint: {path}: {key!r} missing or of the wrong type")
    if not all(isinstance(v, torch.Tensor) for v in checkpoint["state_dict"].values()):
        raise SermtlError(f"not a sermtl checkpoint: {path}: 'state_dict' holds values that are not tensors")
    if not checkpoint["emotions"] or not all(isinstance(e, str) for e in checkpoint["emotions"]):
        raise SermtlError(f"not a sermtl checkpoint: {path}: 'emotions' is not a list of class names")
    aux = checkpoint.get("aux")
    if aux is not None and not (isinstance(aux, dict) and isinstance(aux.get("column"), str)
                                and isinstance(aux.get("classes"), list)):
        raise SermtlError(f"not a sermtl checkpoint: {path}: 'aux' is malformed")
    return checkpoint

"""Tasks and the loss-weight schedule of multi-task training.

The loss is ``(1 − α_e)·L_emo + α_e·L_aux`` with ``α_e = min(α0 + step·e, α_max)`` at
epoch ``e`` (0-based). The paper starts at α0 = 0.1 and adds 0.05 an epoch but never says
where it stops; uncapped, α passes 0.5 at epoch 8 and 1 at epoch 18, after which the
emotion loss would have weight ≤ 0. sermtl caps it at ``α_max = 0.5`` by default: the
auxiliary task may grow to equal weight with emotion but never outweigh the task the
model is for. ``--alpha-max`` changes it (any value in [0, 1]).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from featurestore.errors import ConfigError


def alpha_at(epoch: int, alpha0: float, step: float, alpha_max: float) -> float:
    """``α_e = min(alpha0 + step·e, alpha_max)`` at 0-based epoch ``e`` (never below 0); the
    defaults are the options ``--alpha0``, ``--alpha-step`` and ``--alpha-max`` of
    :class:`trainer.config.TrainConfig`.

    Examples
    --------
    >>> [round(alpha_at(e, 0.1, 0.05, 0.5), 2) for e in (0, 1, 8, 30)]
    [0.1, 0.15, 0.5, 0.5]
    """
    return max(0.0, min(alpha0 + step * epoch, alpha_max))


@dataclasses.dataclass(frozen=True)
class Task:
    """A classification target read from a manifest column."""

    column: str
    classes: tuple[str, ...]

    @classmethod
    def from_values(cls, column: str, values: Sequence[Any]) -> Task:
        """The task whose classes are the distinct non-empty ``values`` (sorted)."""
        classes = tuple(sorted({str(v) for v in values if v is not None}))
        if len(classes) < 2:
            raise ConfigError(f"column {column!r} needs at least 2 classes in the training data, found {list(classes)}")
        return cls(column, classes)

    def encode(self, value: Any) -> int:
        """Class index of ``value``; -100 (ignored by the loss) for an empty or unknown value."""
        try:
            return self.classes.index(str(value)) if value is not None else -100
        except ValueError:
            return -100

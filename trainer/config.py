"""The training configuration: every option declared once, with its default, help text and
allowed values, and checked when the config is built (from the CLI and from Python alike).

Torch-free, so that the command line can build and check a config before importing torch.
The ``sermtl train``/``cv`` flags are generated from :func:`options` (``--batch-size`` for
``batch_size``), so adding an option means adding one field here, its use, and a test.

>>> TrainConfig(epochs=5).epochs
5
>>> TrainConfig(input_norm="utterence")
Traceback (most recent call last):
...
featurestore.errors.SermtlError: --input-norm: 'utterence' is not one of global, utterance (nearest: utterance)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Callable, Iterator

from featurestore.errors import SermtlError
from featurestore.features.base import device_problem
from trainer.tasks import DEFAULT_ALPHA_MAX, AlphaSchedule



def flag(name: str) -> str:
    """The command-line flag of a field: ``batch_size`` → ``--batch-size``."""
    return "--" + name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a field allows: ``choices``, or numeric bounds (``low``/``high``, inclusive unless
    ``open_low``/``open_high``), or a ``check`` that returns an error text for a bad value;
    ``multiple_of`` for sizes the network needs divisible."""

    help: str
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    multiple_of: int | None = None
    check: Callable[[Any], str | None] | None = None

    def describe(self) -> str:
        """The allowed values in words (for error messages and ``--help``)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is None and self.high is None:
            return ""
        low = "(-inf" if self.low is None else f"{'(' if self.open_low else '['}{self.low:g}"
        high = "inf)" if self.high is None else f"{self.high:g}{')' if self.open_high else ']'}"
        return f"in {low}, {high}" + (f", a multiple of {self.multiple_of}" if self.multiple_of else "")


def option(default: Any, help: str, **spec: Any) -> Any:
    """A config field with its :class:`Spec`."""
    return dataclasses.field(default=default, metadata={"spec": Spec(help, **spec)})


def _check_layer(value: Any) -> str | None:
    if value in ("last", "weighted") or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    if isinstance(value, str) and value.isdigit():
        return None
    return f"{value!r} is not last, weighted or a layer index >= 0"


def _check_column(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() and "\x00" not in value else f"{value!r} is not a column name"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (the paper's values are the defaults).

    Every field is checked when the config is built; a bad value is a one-line
    :class:`SermtlError` naming the flag, the value and what is allowed.
    """

    epochs: int = option(50, "Training epochs.", low=1)
    batch_size: int = option(64, "Utterances per training batch (at least 2: BatchNorm needs two).", low=2)
    lr: float = option(1e-3, "Learning rate of Adam (AdamW with --weight-decay).", low=0, high=10, open_low=True)
    weight_decay: float = option(0.0, "Decoupled weight decay (AdamW); 0 is plain Adam, as in the paper.", low=0)
    dropout: float = option(0.0, "Dropout on the pooled statistics before the embedding layer.", low=0, high=1, open_high=True)
    alpha0: float = option(0.1, "Auxiliary loss weight at epoch 1.", low=0, high=1)
    alpha_step: float = option(0.05, "Added to alpha every epoch.", low=-1, high=1)
    alpha_max: float = option(DEFAULT_ALPHA_MAX, "Cap of alpha.", low=0, high=1)
    aux: str = option("expression", "Auxiliary task column (expression, gender, corpus, …) or none.", check=_check_column)
    label: str = option("emotion", "Column with the emotion labels.", check=_check_column)
    layer: str = option("last", "Stored layer: last, an index, or weighted (learned sum).", check=_check_layer)
    channels: int = option(512, "ECAPA-TDNN channels C.", low=8, high=8192, multiple_of=8)
    embedding_dim: int = option(192, "Embedding size of the emotion branch.", low=1, high=8192)
    margin: float = option(0.2, "AAM-softmax margin (radians).", low=0, high=1)
    scale: float = option(30.0, "AAM-softmax scale.", low=0, high=1000, open_low=True)
    crop_seconds: float = option(3.0, "Random training crop length in seconds.", low=0, high=3600, open_low=True)
    input_norm: str = option("global", "Input normalisation: training-set mean/std, or also subtract each "
                                       "utterance's own mean.", choices=("global", "utterance"))
    class_weights: str = option("none", "Weight the emotion loss by inverse class frequency (balanced).",
                                choices=("none", "balanced"))
    augment: str = option("none", "Training-input augmentation: SpecAugment time and feature-band masking.",
                          choices=("none", "specaugment"))
    lr_schedule: str = option("constant", "Learning rate per epoch: constant, or cosine decay towards 0 over --epochs.",
                              choices=("constant", "cosine"))
    batchnorm: str = option("running", "BatchNorm statistics for evaluation: momentum-averaged during training, or "
                                       "re-estimated on up to 32 training batches after each epoch (precise).",
                            choices=("running", "precise"))
    average_best: int = option(1, "Test with the mean weights of the K epochs with the best validation UWA "
                                  "(1: the best epoch).", low=1)
    seed: int = option(0, "Random seed (folds, initialisation, batches).", low=0, high=2**32 - 1)
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps.", check=device_problem)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_field(field, getattr(self, field.name))
        if self.average_best > self.epochs:
            raise SermtlError(f"--average-best {self.average_best} is more than --epochs {self.epochs}")

    def schedule(self) -> AlphaSchedule:
        """The auxiliary loss weight per epoch."""
        return AlphaSchedule(self.alpha0, self.alpha_step, self.alpha_max)

    @property
    def uses_aux(self) -> bool:
        return self.aux not in ("", "none")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        """A config from a dict (a run's saved ``config.json``, a config file): unknown keys
        are refused in one line naming the nearest valid key."""
        if not isinstance(values, dict):
            raise SermtlError(f"{source}: the training config must be a mapping, got {type(values).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                near = difflib.get_close_matches(str(key), names, n=1)
                raise SermtlError(f"{source}: unknown option {key!r}" + (f" (nearest: {near[0]})" if near else ""))
        return cls(**values)


def options() -> Iterator[tuple[dataclasses.Field, Spec]]:
    """Every field of :class:`TrainConfig` with its :class:`Spec`, in declaration order."""
    for field in dataclasses.fields(TrainConfig):
        yield field, field.metadata["spec"]


def _check_field(field: dataclasses.Field, value: Any) -> None:
    spec: Spec = field.metadata["spec"]
    name = flag(field.name)
    kind = field.type if isinstance(field.type, type) else {"int": int, "float": float, "str": str}.get(str(field.type))
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise SermtlError(f"{name}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SermtlError(f"{name}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise SermtlError(f"{name}: must be a finite number, got {value!r}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise SermtlError(f"{name}: {problem}")
        return
    if kind is str and not isinstance(value, str):
        raise SermtlError(f"{name}: expected text, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        near = difflib.get_close_matches(str(value), spec.choices, n=1)
        raise SermtlError(f"{name}: {value!r} is not {spec.describe()}" + (f" (nearest: {near[0]})" if near else ""))
    if spec.low is not None and (value < spec.low or (spec.open_low and value == spec.low)) \
            or spec.high is not None and (value > spec.high or (spec.open_high and value == spec.high)) \
            or spec.multiple_of and value % spec.multiple_of:
        raise SermtlError(f"{name} must be {spec.describe()}, got {value!r}")

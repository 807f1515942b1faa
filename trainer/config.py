"""The training configuration: every option declared once, with its default, help text and
allowed values, and checked when the config is built (from the CLI and from Python alike).

Torch-free, so that the command line can build and check a config before importing torch.
The flags of ``sermtl train``, ``cv``, ``sweep`` and ``experiment`` are generated from
:func:`options` (``--batch-size`` for ``batch_size``), so adding an option means adding one
field here, its use, and a test (``tests/unit/test_config.py`` lists a bad value per field).
Config files (:func:`read_config_file`) and sweep grids (:func:`parse_value`) are read
against the same declarations.

>>> TrainConfig(epochs=5).epochs
5
>>> TrainConfig.from_dict({"channels": 128}).network.channels
128
>>> TrainConfig.from_dict({"input_norm": "utterence"})
Traceback (most recent call last):
...
featurestore.errors.ConfigError: --input-norm: 'utterence' is not one of auto, global, utterance, speaker (nearest: utterance)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from featurestore.errors import ConfigError, SermtlError, nearest, quote, unknown_choice
from featurestore.features import FEATURES
from featurestore.features.base import device_problem
from featurestore.options import Spec, check_fields, flag, option
from featurestore.registry import Registry
from featurestore.textfile import read_structured_file
from trainer.limits import MAX_EPOCHS
from trainer.tasks import alpha_at


def _check_layer(value: Any) -> str | None:
    if value in ("last", "weighted") or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    if isinstance(value, str) and value.isdigit():
        return None
    return f"{quote(value)} is not last, weighted or a layer index >= 0"


def _check_column(value: Any) -> str | None:
    return (
        None
        if isinstance(value, str) and value.strip() and "\x00" not in value
        else f"{quote(value)} is not a column name"
    )


@dataclasses.dataclass(frozen=True)
class NetworkOptions:
    """The network's hyper-parameters: ECAPA-TDNN width, embedding, AAM-softmax, input
    normalisation and dropout. :class:`trainer.network.NetworkConfig` holds this object
    itself, next to the sizes the data decides."""

    channels: int = option(512, "ECAPA-TDNN channels C.", low=8, high=8192, multiple_of=8)
    embedding_dim: int = option(192, "Embedding size of the emotion branch.", low=1, high=8192)
    margin: float = option(0.2, "AAM-softmax margin (radians).", low=0, high=1)
    scale: float = option(30.0, "AAM-softmax scale.", low=0, high=1000, open_low=True)
    input_norm: str = option(
        "auto",
        "Input normalisation: training-set mean/std (global); also subtract each "
        "utterance's own mean (utterance); first standardise each utterance with "
        "the mean/std of all its speaker's utterances, test speakers' from their "
        "unlabelled test utterances (speaker); or auto: speaker where most training "
        "speakers speak most classes, else global (decided from the training rows' labels "
        "and speakers, recorded with its reason in the run's config.json).",
        choices=("auto", "global", "utterance", "speaker"),
    )
    dropout: float = option(
        0.0, "Dropout on the pooled statistics before the embedding layer.", low=0, high=1, open_high=True
    )

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def speaker_normalised(self) -> bool:
        """Whether inputs are standardised per speaker first (``input_norm`` ``speaker``;
        ``auto`` is resolved before training: :func:`trainer.speakers.resolve_input_norm`)."""
        return self.input_norm == "speaker"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (the paper's values are the defaults).

    Every field is checked when the config is built; a bad value is a one-line
    :class:`SermtlError` naming the flag, the value and what is allowed. The network's
    options are the nested :class:`NetworkOptions` (``config.network.channels``); the
    command line and :meth:`from_dict` also take them by their own names (``channels``).
    """

    epochs: int = option(50, "Training epochs.", low=1, high=MAX_EPOCHS)
    batch_size: int = option(64, "Utterances per training batch (at least 2: BatchNorm needs two).", low=2)
    lr: float = option(1e-3, "Learning rate of Adam (AdamW with --weight-decay).", low=0, high=10, open_low=True)
    weight_decay: float = option(0.0, "Decoupled weight decay (AdamW); 0 is plain Adam, as in the paper.", low=0)
    alpha0: float = option(0.1, "Auxiliary loss weight at epoch 1.", low=0, high=1)
    alpha_step: float = option(0.05, "Added to alpha every epoch.", low=-1, high=1)
    alpha_max: float = option(0.5, "Cap of alpha (the paper gives none; see trainer/tasks.py).", low=0, high=1)
    aux: str = option(
        "auto",
        "Auxiliary task: a column (expression, gender, corpus, …), none, or auto (expression "
        "when the store has two or more expression classes, else none).",
        check=_check_column,
    )
    label: str = option("emotion", "Column with the emotion labels.", check=_check_column)
    layer: str = option("last", "Stored layer: last, an index, or weighted (learned sum).", check=_check_layer)
    network: NetworkOptions = dataclasses.field(default_factory=NetworkOptions)
    crop_seconds: float = option(3.0, "Random training crop length in seconds.", low=0, high=3600, open_low=True)
    batching: str = option(
        "bucketed",
        "Training batches: bucketed (similar crop lengths together: shuffled, sorted inside pools of "
        "16 batches, batches shuffled; little padding) or random (shuffled and cut in order).",
        choices=("bucketed", "random"),
    )
    class_weights: str = option(
        "none", "Weight the emotion loss by inverse class frequency (balanced).", choices=("none", "balanced")
    )
    label_smoothing: float = option(
        0.0,
        "Label smoothing of the emotion loss: the target puts this much probability mass evenly on all classes.",
        low=0,
        high=1,
        open_high=True,
    )
    augment: str = option(
        "none",
        "Training-input augmentation: SpecAugment time and feature-band masking.",
        choices=("none", "specaugment"),
    )
    lr_schedule: str = option(
        "constant",
        "Learning rate per epoch: constant, or cosine decay towards 0 over --epochs.",
        choices=("constant", "cosine"),
    )
    batchnorm: str = option(
        "running",
        "BatchNorm statistics for evaluation: momentum-averaged during training, or "
        "re-estimated on up to 32 training batches after each epoch (precise).",
        choices=("running", "precise"),
    )
    average_best: int = option(
        1, "Test with the mean weights of the K epochs with the best validation UWA (1: the best epoch).", low=1
    )
    seed: int = option(0, "Random seed (folds, initialisation, batches).", low=0, high=2**32 - 1)
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps.", check=device_problem)

    def __post_init__(self) -> None:
        if not isinstance(self.network, NetworkOptions):
            raise ConfigError(f"network: expected NetworkOptions, got {type(self.network).__name__}")
        check_fields(self)
        if self.average_best > self.epochs:
            raise ConfigError(f"--average-best {self.average_best} is more than --epochs {self.epochs}")

    def alpha(self, epoch: int) -> float:
        """The auxiliary loss weight of 0-based ``epoch`` (:func:`trainer.tasks.alpha_at`)."""
        return alpha_at(epoch, self.alpha0, self.alpha_step, self.alpha_max)

    @property
    def uses_aux(self) -> bool:
        """Whether an auxiliary task is trained (``auto`` must be resolved first: :meth:`resolve_aux`)."""
        return self.aux not in ("", "none")

    def resolve_aux(self, columns: dict[str, set]) -> TrainConfig:
        """This config with ``aux="auto"`` made concrete from the store's ``{column: values}``:
        ``expression`` when it holds two or more classes, else ``none`` (with a warning)."""
        if self.aux != "auto":
            return self
        if len(columns.get("expression", set()) - {None}) >= 2:
            return dataclasses.replace(self, aux="expression")
        warnings.warn(
            "--aux auto: the store has fewer than two expression classes; training without an "
            "auxiliary task (--aux none)",
            stacklevel=2,
        )
        return dataclasses.replace(self, aux="none")

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain data (``network`` a dict), as runs save it."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every option by its own name (``channels``, not ``network.channels``)."""
        return {name: _get(self, path) for name, path in _PATHS.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | None = None) -> TrainConfig:
        """A config from a dict of options, flat (``{"channels": 128}``, as on the command
        line and in run directories of older versions) or nested (``{"network":
        {"channels": 128}}``, as :meth:`to_dict` gives), defaults for the rest. An unknown
        key is one line naming the nearest valid key."""
        try:
            return cls._build(values)
        except SermtlError as exc:
            raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None

    @classmethod
    def _build(cls, values: dict[str, Any]) -> TrainConfig:
        if not isinstance(values, dict):
            raise ConfigError(f"the training config must be a mapping, got {type(values).__name__}")
        flat = dict(values)
        nested = flat.pop("network", None)
        if nested is not None:
            if not isinstance(nested, dict):
                raise ConfigError(f"'network' must be a mapping, got {type(nested).__name__}")
            flat.update(nested)
        for key in flat:
            if key not in _PATHS:
                raise ConfigError(f"unknown option {quote(key)}{nearest(key, _PATHS)}")
        network = NetworkOptions(**{k: v for k, v in flat.items() if _PATHS[k][0] == "network"})
        return cls(network=network, **{k: v for k, v in flat.items() if _PATHS[k][0] != "network"})


def _leaves(cls: type, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dataclasses.Field]]:
    for field in dataclasses.fields(cls):
        if "spec" in field.metadata:
            yield (*prefix, field.name), field
        else:  # a nested config
            yield from _leaves(field.default_factory, (*prefix, field.name))


#: Every option's own name → its path in :class:`TrainConfig` (``channels`` → ``("network", "channels")``).
_PATHS: dict[str, tuple[str, ...]] = {path[-1]: path for path, _ in _leaves(TrainConfig)}
_FIELDS: dict[str, dataclasses.Field] = {path[-1]: field for path, field in _leaves(TrainConfig)}


def _get(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def parse_value(name: str, text: str) -> Any:
    """The value of option ``name`` written as ``text`` (``--grid lr=0.01``): an int, a float
    or text by the option's type; one line naming the option, its allowed values and, for an
    unknown name, the nearest one."""
    if name not in _FIELDS:
        raise ConfigError(f"unknown option {quote(name)}{nearest(name, _FIELDS)}")
    kind = {"int": int, "float": float}.get(str(_FIELDS[name].type))
    if kind is None:
        return text
    try:
        return kind(text)
    except ValueError:
        allowed = _FIELDS[name].metadata["spec"].describe()
        raise ConfigError(
            f"{flag(name)}: {quote(text)} is not {'an integer' if kind is int else 'a number'}"
            + (f" ({allowed})" if allowed else "")
        ) from None


def options() -> Iterator[tuple[dataclasses.Field, Spec]]:
    """Every option of :class:`TrainConfig` (nested ones included, by their own names) with
    its :class:`Spec`, in declaration order."""
    for field in _FIELDS.values():
        yield field, field.metadata["spec"]


# -- config files ---------------------------------------------------------------------------------
#: Presets that ship with sermtl, found by name (``--config paper``): their YAML files.
PRESETS = Registry(
    "--config (no such file, nor a preset)",
    {path.stem: path for path in sorted(Path(__file__).with_name("presets").glob("*.yaml"))},
    find=Path,
)
#: Keys a run's ``config.json`` records about its store and the choices made for it (``auto``
#: options); read back, they are not options.
_RUN_RECORD = ("store_fingerprint", "store_entries", "store_digest", "decisions")


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """What a config file gives: a store (or the stores of a fusion), a protocol (as a dict)
    and training options (by their own names), each possibly absent."""

    source: str
    store: str | tuple[str, ...] | None = None
    protocol: dict[str, Any] | None = None
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: features whose stores beside ``--store`` are fused with it (``--fuse``)
    fuse: tuple[str, ...] = ()


def preset_names() -> list[str]:
    """Names of the presets that ship with sermtl."""
    return PRESETS.names()


def read_config_file(spec: str | Path) -> ConfigFile:
    """A config file (YAML or JSON; a run's own ``config.json`` is one) or a preset's name.

    Top-level keys: ``store``, ``protocol`` (a mapping: ``name``, ``by``, ``folds``, …),
    ``train`` (a mapping of options) and any training option by its own name (``lr: 0.01``,
    ``channels: 128``, or ``network: {channels: 128}``). An unknown key or a bad value is one
    line naming the file, the key, what is allowed and the nearest valid key.
    """
    path = Path(spec)
    if not path.exists():
        if path.suffix:
            raise unknown_choice(PRESETS.flag, str(spec), preset_names())
        path = PRESETS.load(str(spec))
    source = str(path)
    data = _parse(path)
    known = ["store", "fuse", "protocol", "train", *_RUN_RECORD, "network", *_PATHS]
    for key in data:
        if key not in known:
            raise ConfigError(f"{source}: unknown key {quote(key)}{nearest(key, known)}")
    train = data.get("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"{source}: 'train' must be a mapping, got {type(train).__name__}")
    train = {**train, **{k: v for k, v in data.items() if k in _PATHS or k == "network"}}
    flat = TrainConfig.from_dict(train, source).flat()  # checks every value, naming the file
    given = {name for name in flat if name in train or name in train.get("network", {})}
    store = data.get("store")
    if isinstance(store, list) and 2 <= len(store) <= 16 and all(isinstance(p, str) for p in store):
        store = tuple(store)  # the stores of a fusion
    elif store is not None and not isinstance(store, str):
        raise ConfigError(f"{source}: 'store' must be a path or a list of paths, got {quote(store)}")
    fuse = data.get("fuse") or []
    fusable = ("none", *FEATURES.names())
    if not isinstance(fuse, list) or len(fuse) > 16 or any(f not in fusable for f in fuse):
        raise ConfigError(f"{source}: 'fuse' must be a list of {', '.join(fusable)}; got {quote(fuse)}")
    protocol = data.get("protocol")
    if protocol is not None:
        from trainer.protocols import Protocol

        Protocol.from_dict(protocol, source)
    return ConfigFile(source, store, protocol, {name: flat[name] for name in given}, tuple(fuse))


def _parse(path: Path) -> dict[str, Any]:
    """A YAML or JSON mapping (JSON is YAML too; ``.json`` files are read as JSON)."""
    data = read_structured_file(path, f"--config {path}")
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of options, got {type(data).__name__}")
    return data

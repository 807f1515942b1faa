"""Protocols: how folds are made (:func:`trainer.folds.make_folds`) or read
(:mod:`trainer.fold_files`), declared as a :class:`Protocol` and checked when built.

A run's ``config.json`` and config files (``protocol:``) hold a protocol as a mapping;
:meth:`Protocol.from_dict` reads it back, refusing an unknown key or a value of the wrong
type in one line.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from featurestore.errors import ConfigError, SermtlError, nearest, quote, unknown_choice
from featurestore.manifest import Manifest
from featurestore.schema import ListOf, MapOf, Record, Text, check, maybe
from trainer.fold_files import read_folds_file
from trainer.folds import PROTOCOLS, Fold, make_folds, restrict_training

_VALUES = ListOf(Text(max_length=1000), max_items=10**5)
#: The types of a protocol's values (``name``, ``folds`` and ``valid_fraction`` are checked,
#: with their flags' messages, when a :class:`Protocol` is built).
_PROTOCOL_VALUES = Record(
    {
        "by": maybe(Text(max_length=1000)),
        "train_values": maybe(_VALUES),
        "test_values": maybe(_VALUES),
        "train_where": maybe(MapOf(_VALUES, max_items=64)),
        "path": maybe(Text()),
    }
)


@dataclasses.dataclass
class Protocol:
    """How folds are made (see :func:`make_folds`); checked when built."""

    name: str = "loso"
    by: str | None = "session"
    folds: int = 5
    valid_fraction: float = 0.2
    train_values: list[str] | None = None
    test_values: list[str] | None = None
    train_where: dict[str, list[str]] | None = None
    #: ``file``: the fold file or folder (:mod:`trainer.fold_files`)
    path: str | None = None

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise unknown_choice("--protocol", self.name, PROTOCOLS)
        if (self.name == "file") != (self.path is not None):
            raise ConfigError("--folds-file goes with --protocol file (given alone, it sets it)")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ConfigError(f"--folds must be an integer >= 2, got {quote(self.folds)}")
        if (
            isinstance(self.valid_fraction, bool)
            or not isinstance(self.valid_fraction, (int, float))
            or not 0.0 <= self.valid_fraction < 1.0
        ):
            raise ConfigError(f"--valid-fraction must be in [0, 1), got {quote(self.valid_fraction)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "protocol") -> Protocol:
        """A protocol from a dict (a run's ``config.json``, a config file); an unknown key is
        one line naming the nearest valid key, a value of the wrong type one line naming it."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: 'protocol' must be a mapping, got {type(values).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise ConfigError(f"{source}: unknown protocol key {quote(key)}{nearest(key, names)}")
        check(values, _PROTOCOL_VALUES, f"{source}: protocol", ConfigError)
        try:
            return cls(**values)
        except SermtlError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def make(self, manifest, seed: int) -> list[Fold]:
        if self.name == "file":
            folds = read_folds_file(self.path, manifest, self.valid_fraction, seed)
            return restrict_training(folds, manifest, self.train_where) if self.train_where else folds
        folds = make_folds(
            manifest,
            self.name,
            by=self.by,
            folds=self.folds,
            valid_fraction=self.valid_fraction,
            seed=seed,
            train_values=self.train_values,
            test_values=self.test_values,
        )
        return restrict_training(folds, manifest, self.train_where) if self.train_where else folds


def default_protocol(manifest: Manifest) -> Protocol:
    """Leave-one-session-out when the store has sessions (IEMOCAP), else 80/10/10 5-fold."""
    if "session" in manifest.columns and len(set(manifest.column("session")) - {None}) > 1:
        return Protocol("loso", by="session")
    return Protocol("kfold", by=None, folds=5)

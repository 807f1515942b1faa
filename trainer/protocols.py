"""Protocols: how folds are made (:func:`trainer.folds.make_folds`) or read
(:mod:`trainer.fold_files`), declared as a :class:`Protocol` and checked when built.

A run's ``config.json`` and config files (``protocol:``) hold a protocol as a mapping;
:meth:`Protocol.from_dict` reads it back, refusing an unknown key or a value of the wrong
type in one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from featurestore.errors import ConfigError, SermtlError, nearest, quote
from featurestore.manifest import Manifest
from featurestore.options import check_fields, comma_list, option
from featurestore.schema import ListOf, MapOf, Shape, Text, maybe
from trainer.fold_files import read_folds_file
from trainer.folds import DEFAULT_VALID_FRACTION, PROTOCOLS, Fold, make_folds, restrict_training
from trainer.limits import MAX_FOLDS

_VALUES = ListOf(Text(max_length=1000), max_items=10**5)


def _shaped(shape: Shape) -> Callable[[Any], str | None]:
    """A :class:`~featurestore.options.Spec` check from a declared shape."""

    def problem(value: Any) -> str | None:
        found = shape.problem(value, "")
        return None if found is None else found[1]

    return problem


@dataclasses.dataclass
class Protocol:
    """How folds are made (see :func:`make_folds`): every field an option declared once
    (:mod:`featurestore.options`), its flag generated from the declaration; checked when built."""

    name: str = option(
        "loso",
        "Folds: leave one --by group out (loso), 80/10/10 k-fold (kfold), k-fold over --by groups (group-kfold), "
        "a fixed split of --by values (split), or your own (file). "
        "Default: loso --by session when the store has sessions, else kfold.",
        choices=tuple(PROTOCOLS),
        flag="--protocol",
        show_default=False,
    )
    by: str | None = option(
        "session",
        "Column the protocol groups by (loso, group-kfold, split), e.g. session or speaker.",
        check=_shaped(maybe(Text(max_length=1000))),
        show_default=False,
    )
    folds: int = option(5, "Number of folds (kfold, group-kfold).", low=2, high=MAX_FOLDS)
    valid_fraction: float = option(
        DEFAULT_VALID_FRACTION,
        "Share of training rows held out for validation (loso, split, group-kfold; kfold is 80/10/10).",
        low=0,
        high=1,
        open_high=True,
    )
    train_values: list[str] | None = option(
        None,
        "split: comma list of --by values to train on, e.g. Session1,Session2,Session3,Session4.",
        check=_shaped(maybe(_VALUES)),
        parse=comma_list,
    )
    test_values: list[str] | None = option(
        None,
        "split: comma list of --by values to test on, e.g. Session5.",
        check=_shaped(maybe(_VALUES)),
        parse=comma_list,
    )
    train_where: dict[str, list[str]] | None = option(
        None,
        "Train (and validate) only on rows whose columns take these values; the test rows stay (Table II).",
        check=_shaped(maybe(MapOf(_VALUES, max_items=64))),
        cli=False,
    )
    path: str | None = option(
        None,
        "Your own folds: a sermtl folds.json, or EmoBox fold files (the data folder holding fold_<k>/); "
        "sets --protocol file.",
        check=_shaped(maybe(Text())),
        flag="--folds-file",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if (self.name == "file") != (self.path is not None):
            raise ConfigError("--folds-file goes with --protocol file (given alone, it sets it)")

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

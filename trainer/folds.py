"""Evaluation protocols as explicit fold lists (1-based fold ids everywhere).

:func:`make_folds` turns a :class:`~featurestore.manifest.Manifest` into a list of
:class:`Fold` (utterance ids for train, valid and test), :func:`save_folds` writes them as a
JSON split file that can be committed, :func:`load_folds` reads one back and
:func:`check_folds` refuses folds that overlap or test a class the fold never trains on.

Protocols (``protocol=``):

``loso``
    Leave-one-X-out, ``by`` any column: one fold per value of ``by`` (natural sort order, so
    fold 1 tests ``Session1``); test = that value's rows. IEMOCAP: ``by="session"`` is the
    paper's leave-one-session-out 5-fold CV (Table III).
``kfold``
    BAUM-1's "80:10:10 split for each fold of 5-fold CV". The rows are dealt into
    ``2 * folds`` parts stratified by ``stratify`` (seeded); fold k tests on part 2k-1,
    validates on part 2k and trains on the other parts: with ``folds=5`` each fold is exactly
    80/10/10, like a stratified 5-fold CV whose held-out fifth is halved into validation
    and test. Test sets are disjoint across folds and together cover half the rows.
    Why not the alternatives: a Monte-Carlo 80/10/10 per fold gives overlapping test sets
    (not a CV), and testing on a full fifth gives 70/10/20 or 60/20/20, not the paper's
    ratio. ``valid_fraction`` does not apply (validation is one part, ``1 / (2 * folds)``).
``group-kfold``
    Group-independent K-fold (``by="speaker"``): the groups are split into ``folds``
    disjoint sets balanced by row count (largest first, seeded tie order); fold k tests on
    set k. Validation takes whole groups from the training groups (about ``valid_fraction``
    of the training rows, at least one group), so validation is group-independent too.
``split``
    One fold (the paper's preliminary study: ``by="session"``, train on Session1-4, test on
    Session5): test = rows whose ``by`` value is in ``test_values``, train pool = rows in
    ``train_values`` (default: every other value).

Validation in ``loso`` and ``split`` (the paper is silent for LOSO; "randomly, 80:20" for
the split): a random ``valid_fraction`` of the non-test rows, stratified by ``stratify``
(largest-remainder quotas, every class keeps at least one training row). It never looks at
the test rows, but it shares speakers/sessions with training, so validation scores are
optimistic; use ``group-kfold`` where model selection must be speaker-independent.

Determinism: the same manifest and seed give identical folds; fold k's validation draw is
seeded by ``(seed, k)``, so different seeds give different validation splits.
Id lists keep manifest order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.atomic import write_json
from featurestore.errors import ConfigError
from featurestore.manifest import Manifest
from featurestore.registry import Registry
from trainer.runfiles import FOLDS, read_checked

_MAKERS = {
    "loso": "trainer.folds:loso_sets",
    "kfold": "trainer.folds:kfold_sets",
    "group-kfold": "trainer.folds:group_kfold_sets",
    "split": "trainer.folds:split_sets",
}
#: Protocols :func:`make_folds` draws folds for: name → a function ``(manifest, FoldRequest)
#: → (sets per fold, the parameters to record)``.
FOLD_MAKERS = Registry("--protocol", _MAKERS)
#: Every protocol: those drawn, and ``file``, your own folds read back (:mod:`trainer.fold_files`).
PROTOCOLS = Registry("--protocol", {**_MAKERS, "file": "trainer.fold_files:read_folds_file"})
#: Share of the training rows held out for validation (``--valid-fraction``).
DEFAULT_VALID_FRACTION = 0.2


@dataclasses.dataclass
class Fold:
    """One fold: utterance ids per set; ``fold`` counts from 1.

    >>> Fold(1, ["a", "b"], ["c"], ["d"]).to_dict()
    {'fold': 1, 'train': ['a', 'b'], 'valid': ['c'], 'test': ['d']}
    """

    fold: int
    train: list[str]
    valid: list[str]
    test: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fold:
        return cls(
            int(data["fold"]),
            [str(u) for u in data["train"]],
            [str(u) for u in data["valid"]],
            [str(u) for u in data["test"]],
        )


class FoldList(list):
    """A ``list[Fold]`` that also carries the protocol parameters that made it (``params``),
    so that :func:`save_folds` can write them in the file header."""

    def __init__(self, folds: Sequence[Fold] = (), params: dict[str, Any] | None = None) -> None:
        super().__init__(folds)
        self.params: dict[str, Any] = dict(params or {})


def natural_key(value: Any) -> tuple:
    """Sort key that puts ``Session2`` before ``Session10`` and ``2`` before ``10``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(value)) if p)


# -- helpers ---------------------------------------------------------------------------------
def _column(manifest: Manifest, name: str | None, flag: str, protocol: str) -> list[str]:
    """Values of column ``name`` as strings; every row must have one."""
    if not name:
        raise ConfigError(
            f"protocol {protocol!r} needs {flag} (a column such as session or speaker; "
            f"columns: {', '.join(manifest.columns)})"
        )
    if name not in manifest.columns:
        raise ConfigError(
            f"{flag} {name!r} is not a column of {manifest.source} (columns: {', '.join(manifest.columns)})"
        )
    values = manifest.column(name)
    empty = [u for u, v in zip(manifest.ids(), values) if v is None]
    if empty:
        raise ConfigError(
            f"{flag} {name!r}: {len(empty)} row(s) have no value (e.g. {empty[0]!r}); "
            f"fill them or choose another column"
        )
    return [str(v) for v in values]


def _strata(manifest: Manifest, stratify: str) -> list[str]:
    """Stratification labels (``None`` is its own stratum)."""
    if stratify not in manifest.columns:
        raise ConfigError(
            f"--stratify {stratify!r} is not a column of {manifest.source} (columns: {', '.join(manifest.columns)})"
        )
    return ["-" if v is None else str(v) for v in manifest.column(stratify)]


def _members(ids: Sequence[str], keys: Sequence[str]) -> dict[str, list[str]]:
    """Ids per key, keys in natural order, ids in input order."""
    out: dict[str, list[str]] = {}
    for utt, key in zip(ids, keys):
        out.setdefault(key, []).append(utt)
    return {k: out[k] for k in sorted(out, key=natural_key)}


def stratified_sample(
    ids: Sequence[str], stratum: dict[str, str], fraction: float, rng: np.random.Generator
) -> set[str]:
    """A random ``fraction`` of ``ids`` keeping class proportions (largest-remainder quotas);
    every class keeps at least one row out of the sample."""
    groups = _members(ids, [stratum[u] for u in ids])
    sizes = np.array([len(m) for m in groups.values()])
    quota = fraction * sizes
    take = np.floor(quota).astype(int)
    extra = int(np.floor(fraction * sizes.sum() + 0.5)) - int(take.sum())
    order = rng.permutation(len(sizes))
    order = order[np.argsort(-(quota - take)[order], kind="stable")]
    take[order[:extra]] += 1
    take = np.minimum(take, np.maximum(sizes - 1, 0))
    chosen: set[str] = set()
    for members, k in zip(groups.values(), take):
        chosen.update(members[i] for i in rng.permutation(len(members))[:k])
    return chosen


def fold_rng(seed: int, k: int) -> np.random.Generator:
    """The random generator of fold ``k`` at ``seed`` (so each fold's draw is its own)."""
    return np.random.default_rng([seed, k])


def _need_two(groups: dict[str, list[str]], by: str, protocol: str) -> None:
    if len(groups) < 2:
        raise ConfigError(
            f"{protocol} needs at least 2 values of --by {by!r}, found {len(groups)}: {', '.join(groups) or 'none'}"
        )


# -- protocols: each returns (train, valid, test) id sets per fold and the test groups --------
Sets = tuple[set[str], set[str], set[str]]


@dataclasses.dataclass(frozen=True)
class FoldRequest:
    """The arguments of :func:`make_folds` a fold maker may use."""

    by: str | None
    folds: int
    valid_fraction: float
    seed: int
    train_values: Sequence[str] | None
    test_values: Sequence[str] | None
    stratify: str


def _stratum(manifest: Manifest, stratify: str) -> dict[str, str]:
    return dict(zip(manifest.ids(), _strata(manifest, stratify)))


def loso_sets(manifest: Manifest, request: FoldRequest) -> tuple[list[Sets], dict[str, Any]]:
    """``loso``: one fold per value of ``by``."""
    r = request
    sets, groups = _loso(manifest, r.by, r.valid_fraction, r.seed, _stratum(manifest, r.stratify))
    return sets, {
        "by": r.by,
        "valid_fraction": r.valid_fraction,
        "stratify": r.stratify,
        "seed": r.seed,
        "test_groups": groups,
    }


def kfold_sets(manifest: Manifest, request: FoldRequest) -> tuple[list[Sets], dict[str, Any]]:
    """``kfold``: 80/10/10 per fold, stratified."""
    r = request
    sets = _kfold(manifest, r.folds, r.seed, _stratum(manifest, r.stratify))
    return sets, {"folds": r.folds, "stratify": r.stratify, "seed": r.seed}


def group_kfold_sets(manifest: Manifest, request: FoldRequest) -> tuple[list[Sets], dict[str, Any]]:
    """``group-kfold``: k folds of whole ``by`` groups."""
    r = request
    sets, groups = _group_kfold(manifest, r.by, r.folds, r.valid_fraction, r.seed)
    return sets, {
        "by": r.by,
        "folds": r.folds,
        "valid_fraction": r.valid_fraction,
        "seed": r.seed,
        "test_groups": groups,
    }


def split_sets(manifest: Manifest, request: FoldRequest) -> tuple[list[Sets], dict[str, Any]]:
    """``split``: one fold, testing on the rows whose ``by`` value is in ``test_values``."""
    r = request
    sets, trains, tests = _split(
        manifest, r.by, r.train_values, r.test_values, r.valid_fraction, r.seed, _stratum(manifest, r.stratify)
    )
    return sets, {
        "by": r.by,
        "train_values": trains,
        "test_values": tests,
        "valid_fraction": r.valid_fraction,
        "stratify": r.stratify,
        "seed": r.seed,
        "test_groups": [tests],
    }


def _loso(
    manifest: Manifest, by: str | None, valid_fraction: float, seed: int, stratum: dict[str, str]
) -> tuple[list[Sets], list[list[str]]]:
    ids = manifest.ids()
    groups = _members(ids, _column(manifest, by, "--by", "loso"))
    _need_two(groups, str(by), "loso")
    sets = []
    for k, members in enumerate(groups.values(), start=1):
        test = set(members)
        rest = [u for u in ids if u not in test]
        valid = stratified_sample(rest, stratum, valid_fraction, fold_rng(seed, k))
        sets.append((set(rest) - valid, valid, test))
    return sets, [[g] for g in groups]


def _kfold(manifest: Manifest, folds: int, seed: int, stratum: dict[str, str]) -> list[Sets]:
    ids = manifest.ids()
    parts = 2 * folds
    if len(ids) < parts:
        raise ConfigError(
            f"kfold with --folds {folds} deals the rows into {parts} parts, "
            f"but {manifest.source} has only {len(ids)} rows"
        )
    rng = fold_rng(seed, 0)
    dealt = [
        members[i]
        for members in _members(ids, [stratum[u] for u in ids]).values()
        for i in rng.permutation(len(members))
    ]
    label = rng.permutation(parts)
    part_of = {u: int(label[i % parts]) for i, u in enumerate(dealt)}
    sets = []
    for k in range(1, folds + 1):
        test = {u for u in ids if part_of[u] == 2 * k - 2}
        valid = {u for u in ids if part_of[u] == 2 * k - 1}
        sets.append((set(ids) - test - valid, valid, test))
    return sets


def _group_kfold(
    manifest: Manifest, by: str | None, folds: int, valid_fraction: float, seed: int
) -> tuple[list[Sets], list[list[str]]]:
    ids = manifest.ids()
    groups = _members(ids, _column(manifest, by, "--by", "group-kfold"))
    _need_two(groups, str(by), "group-kfold")
    if folds > len(groups):
        raise ConfigError(f"--folds {folds} is more than the {len(groups)} values of --by {by!r}")
    names = list(groups)
    rng = fold_rng(seed, 0)
    order = rng.permutation(len(names))
    order = order[np.argsort([-len(groups[names[i]]) for i in order], kind="stable")]
    loads = np.zeros(folds, dtype=int)
    assigned: list[list[str]] = [[] for _ in range(folds)]
    for i in order:
        j = int(np.argmin(loads))
        assigned[j].append(names[i])
        loads[j] += len(groups[names[i]])
    test_groups = sorted((sorted(s, key=natural_key) for s in assigned), key=lambda s: natural_key(s[0]))
    sets = []
    for k, tested in enumerate(test_groups, start=1):
        training = [g for g in names if g not in tested]
        chosen: list[str] = []
        if valid_fraction > 0:
            if len(training) < 2:
                raise ConfigError(
                    f"group-kfold fold {k} has one training value of --by {by!r}, none left "
                    f"for validation: use fewer --folds or --valid-fraction 0"
                )
            shuffled = [training[i] for i in fold_rng(seed, k).permutation(len(training))]
            sizes = np.cumsum([len(groups[g]) for g in shuffled])
            count = 1 + int(np.argmin(np.abs(sizes[:-1] - valid_fraction * sizes[-1])))
            chosen = shuffled[:count]
        valid = {u for g in chosen for u in groups[g]}
        test = {u for g in tested for u in groups[g]}
        sets.append((set(ids) - test - valid, valid, test))
    return sets, test_groups


def _split(
    manifest: Manifest,
    by: str | None,
    train_values: Sequence[str] | None,
    test_values: Sequence[str] | None,
    valid_fraction: float,
    seed: int,
    stratum: dict[str, str],
) -> tuple[list[Sets], list[str], list[str]]:
    groups = _members(manifest.ids(), _column(manifest, by, "--by", "split"))
    available = ", ".join(groups)
    if not test_values:
        raise ConfigError(f"protocol 'split' needs --test-values (values of --by {by!r}: {available})")
    tests = [str(v) for v in test_values]
    trains = [str(v) for v in train_values] if train_values else [g for g in groups if g not in tests]
    for flag, values in (("--train-values", trains), ("--test-values", tests)):
        missing = [v for v in values if v not in groups]
        if missing:
            raise ConfigError(f"{flag}: {missing[0]!r} is not a value of --by {by!r} (values: {available})")
    both = [v for v in trains if v in tests]
    if both:
        raise ConfigError(f"{both[0]!r} is in both --train-values and --test-values")
    if not trains:
        raise ConfigError(f"--test-values take every value of --by {by!r}: nothing is left to train on")
    pool = [u for g in trains for u in groups[g]]
    valid = stratified_sample(pool, stratum, valid_fraction, fold_rng(seed, 1))
    return [(set(pool) - valid, valid, {u for g in tests for u in groups[g]})], trains, tests


def make_folds(
    manifest: Manifest,
    protocol: str,
    *,
    by: str | None = None,
    folds: int = 5,
    valid_fraction: float = DEFAULT_VALID_FRACTION,
    seed: int = 0,
    train_values: Sequence[str] | None = None,
    test_values: Sequence[str] | None = None,
    stratify: str = "emotion",
) -> FoldList:
    """Folds of ``manifest`` under ``protocol`` (see the module docstring).

    Only the arguments a protocol uses are recorded in the result's ``params``: ``folds`` is
    ignored by ``loso`` (one fold per value) and ``split`` (one fold), ``by`` and
    ``valid_fraction`` by ``kfold`` (use ``group-kfold`` to keep groups apart), ``stratify``
    by ``group-kfold``.

    Raises
    ------
    ConfigError
        A bad flag value, named in a one-line message.
    """
    FOLD_MAKERS.load(protocol)  # a bogus name: one line naming the nearest
    if not 0 <= valid_fraction < 1:
        raise ConfigError(f"--valid-fraction must be in [0, 1), got {valid_fraction}")
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {seed}")
    if protocol in ("kfold", "group-kfold") and folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    if protocol != "split" and (train_values or test_values):
        raise ConfigError(f"--train-values/--test-values apply to --protocol split only, not {protocol!r}")
    if not len(manifest):
        raise ConfigError(f"{manifest.source} has no rows to split into folds")
    request = FoldRequest(by, folds, valid_fraction, int(seed), train_values, test_values, stratify)
    sets, params = FOLD_MAKERS.load(protocol)(manifest, request)
    params = {"protocol": protocol, **params}
    ids = manifest.ids()
    return FoldList(
        [
            Fold(k, [u for u in ids if u in train], [u for u in ids if u in valid], [u for u in ids if u in test])
            for k, (train, valid, test) in enumerate(sets, start=1)
        ],
        params,
    )


# -- checking and files ----------------------------------------------------------------------
def check_folds(
    folds: Sequence[Fold], manifest: Manifest, label_column: str = "emotion", *, group_column: str | None = None
) -> None:
    """Refuse folds that cannot be trained and tested honestly.

    Checks, per fold: ids known and listed once, train and test not empty, train/valid/test
    disjoint, every class of valid and test present in train, and (with ``group_column``)
    no value of that column in both test and train/valid.

    Raises
    ------
    SermtlError
        The first problem, e.g. ``fold 3: class 'fear' has no training examples (4 in test)``.
    """
    if not folds:
        raise ConfigError("no folds to check")
    numbers = [f.fold for f in folds]
    if len(set(numbers)) != len(numbers) or min(numbers) < 1:
        raise ConfigError(f"fold ids must be distinct and count from 1, got {numbers}")
    for column in filter(None, (label_column, group_column)):
        if column not in manifest.columns:
            raise ConfigError(
                f"{column!r} is not a column of {manifest.source} (columns: {', '.join(manifest.columns)})"
            )
    for fold in folds:
        name = f"fold {fold.fold}"
        sets = {"train": fold.train, "valid": fold.valid, "test": fold.test}
        for set_name, ids in sets.items():
            seen: set[str] = set()
            for utt in ids:
                if utt in seen:
                    raise ConfigError(f"{name}: {set_name} lists {utt!r} twice")
                if utt not in manifest:
                    raise ConfigError(f"{name}: {set_name} utterance {utt!r} is not in {manifest.source}")
                seen.add(utt)
        for set_name in ("train", "test"):
            if not sets[set_name]:
                raise ConfigError(f"{name}: the {set_name} set is empty")
        for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
            shared = set(sets[a]) & set(sets[b])
            if shared:
                raise ConfigError(f"{name}: {len(shared)} utterance(s) in both {a} and {b} (e.g. {min(shared)!r})")
        trained = {manifest[u][label_column] for u in fold.train}
        for set_name in ("test", "valid"):
            labels = [manifest[u][label_column] for u in sets[set_name]]
            untrained = sorted(set(labels) - trained, key=natural_key)
            if untrained:
                raise ConfigError(
                    f"{name}: class {untrained[0]!r} has no training examples "
                    f"({labels.count(untrained[0])} in {set_name})"
                )
        if group_column:
            seen_groups = {manifest[u][group_column] for u in fold.train + fold.valid}
            leaked = sorted({manifest[u][group_column] for u in fold.test} & seen_groups, key=natural_key)
            if leaked:
                raise ConfigError(f"{name}: {group_column} {leaked[0]!r} is in test and in train/valid")


def save_folds(folds: Sequence[Fold], path: str | Path, header: dict[str, Any] | None = None) -> Path:
    """Write folds as JSON ``{"header": {...}, "folds": [{fold, train, valid, test}, ...]}``.

    The header is ``folds.params`` for a :class:`FoldList` (the protocol parameters), updated
    with ``header`` (JSON-serialisable entries). The write is atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"header": {**getattr(folds, "params", {}), **(header or {})}, "folds": [f.to_dict() for f in folds]}
    return write_json(path, data, indent=1)


def test_digest(ids: Sequence[str]) -> str:
    """A digest of a fold's test ids, whatever their order: two folds with the same digest
    test the same utterances (how ``sermtl compare`` pairs runs and SVM results)."""
    return hashlib.blake2b("\n".join(sorted(ids)).encode("utf-8"), digest_size=8).hexdigest()


def load_folds(path: str | Path) -> tuple[FoldList, dict[str, Any]]:
    """Read a file written by :func:`save_folds` (checked against :data:`trainer.runfiles.FOLDS`):
    the folds (``params`` = header) and the header."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"fold file not found: {path}")
    data = read_checked(path, FOLDS)
    header = dict(data["header"])
    return FoldList([Fold.from_dict(entry) for entry in data["folds"]], header), header


def restrict_training(folds: Sequence[Fold], manifest: Manifest, conditions: dict[str, Sequence[str]]) -> FoldList:
    """Keep only training and validation rows whose columns take the given values.

    The test rows are left as they are: e.g. ``{"expression": ["acted"]}`` trains on the
    acted part only and still tests on everything (the paper's Table II).
    """
    for column in conditions:
        if column not in manifest.columns:
            raise ConfigError(f"--train-where: no column {column!r} (columns: {', '.join(manifest.columns)})")

    def keep(ids: Sequence[str]) -> list[str]:
        return [u for u in ids if all(str(manifest[u][c]) in set(map(str, v)) for c, v in conditions.items())]

    params = {**getattr(folds, "params", {}), "train_where": {c: list(v) for c, v in conditions.items()}}
    return FoldList([Fold(f.fold, keep(f.train), keep(f.valid), list(f.test)) for f in folds], params)

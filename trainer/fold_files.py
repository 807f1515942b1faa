"""Folds from a file (``--folds-file``): a sermtl ``folds.json``, or EmoBox's fold files.

- A ``.json`` file written by sermtl (a run's ``folds.json``): its folds as they are.
- An EmoBox data folder (``data/<dataset>/``, holding ``fold_<k>/`` folders) or the folder
  of its folds: each ``fold_<k>/<dataset>_train_fold_<k>.jsonl`` and ``…_test_fold_<k>.jsonl``
  (``…_fold<k>.jsonl`` too) lists one JSON object per line whose ``key`` is the utterance id
  (as ``sermtl prepare --corpus emobox`` names it). EmoBox gives no validation set: a
  ``valid_fraction`` of each fold's training rows, stratified by emotion and drawn by the
  seed, is held out for choosing the epoch (``--valid-fraction 0``: none, the last epoch).

Every id must be in the store, and no utterance may be tested in two folds: one line
naming the file and the first offender otherwise. Fold folders are named strictly: ``fold_<k>``
with ``k`` written without leading zeros, numbered 1..N without gaps, one train and one test
file each; two folders for one fold (``fold_2`` and ``fold_02``), a gap, a ``fold_0`` or a
second train or test file is one line naming them. Fold files are read a line at a time
(:func:`featurestore.textfile.iter_jsonl`); each line's ``key`` must be text.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from featurestore.errors import ConfigError, quote
from featurestore.manifest import Manifest
from featurestore.textfile import iter_jsonl
from trainer.folds import DEFAULT_VALID_FRACTION, Fold, FoldList, fold_rng, load_folds, natural_key, stratified_sample


def read_folds_file(
    path: str | Path,
    manifest: Manifest,
    valid_fraction: float = DEFAULT_VALID_FRACTION,
    seed: int = 0,
    stratify: str = "emotion",
) -> FoldList:
    """The folds ``path`` describes (module docstring), checked against ``manifest``."""
    path = Path(path)
    if path.is_file():
        folds, _ = load_folds(path)
        sources = {f.fold: path for f in folds}
    elif path.is_dir():
        folds, sources = _emobox_folds(path, manifest, valid_fraction, seed, stratify)
    else:
        raise ConfigError(f"--folds-file {path}: no such file or folder")
    known = set(manifest.ids())
    tested: dict[str, int] = {}
    for fold in folds:
        for utt_id in (*fold.train, *fold.valid, *fold.test):
            if utt_id not in known:
                raise ConfigError(
                    f"--folds-file {sources[fold.fold]}: id {utt_id!r} (fold {fold.fold}) is not in the store"
                )
        for utt_id in fold.test:
            if utt_id in tested:
                raise ConfigError(
                    f"--folds-file {sources[fold.fold]}: {utt_id!r} is tested in folds "
                    f"{tested[utt_id]} and {fold.fold}; test sets must not overlap"
                )
            tested[utt_id] = fold.fold
    return FoldList(folds, {"protocol": "file", "path": str(path), "valid_fraction": valid_fraction, "seed": seed})


def _emobox_folds(
    folder: Path, manifest: Manifest, valid_fraction: float, seed: int, stratify: str
) -> tuple[list[Fold], dict[int, Path]]:
    fold_dirs = _fold_dirs(folder)
    stratum = {u: str(manifest[u][stratify]) if stratify in manifest.columns else "-" for u in manifest.ids()}
    folds, sources = [], {}
    for k in sorted(fold_dirs):
        train_file, test_file = (_fold_file(fold_dirs[k], part, k) for part in ("train", "test"))
        train, test = _keys(train_file), _keys(test_file)
        known_train = [u for u in train if u in stratum]
        valid = stratified_sample(known_train, stratum, valid_fraction, fold_rng(seed, k)) if valid_fraction else set()
        folds.append(Fold(k, [u for u in train if u not in valid], [u for u in train if u in valid], test))
        sources[k] = test_file
    return folds, sources


def _fold_dirs(folder: Path) -> dict[int, Path]:
    """Fold number -> ``fold_<k>`` folder in ``folder`` (or ``folder`` itself, one fold's
    folder), named strictly (module docstring)."""
    found = sorted(
        (d for d in folder.iterdir() if d.is_dir() and re.fullmatch(r"fold_\d+", d.name)),
        key=lambda d: (natural_key(d.name), d.name),
    )
    if not found and re.fullmatch(r"fold_\d+", folder.name):
        return {_fold_number(folder): folder}
    if not found:
        raise ConfigError(f"--folds-file {folder}: no fold_<k> folders (EmoBox fold files) and not a .json fold file")
    by_number: dict[int, list[Path]] = {}
    for d in found:
        by_number.setdefault(int(d.name[len("fold_") :]), []).append(d)
    for k, dirs in sorted(by_number.items()):
        if len(dirs) > 1:
            raise ConfigError(
                f"--folds-file {folder}: {len(dirs)} folders for fold {k} ({', '.join(d.name for d in dirs)}); keep one"
            )
        _fold_number(dirs[0])
    if max(by_number) != len(by_number):  # numbers are distinct and >= 1: a gap
        first = next(k for k in itertools.count(1) if k not in by_number)
        raise ConfigError(
            f"--folds-file {folder}: folds are numbered 1..N without gaps; "
            f"no fold_{first} (the last is fold_{max(by_number)})"
        )
    return {k: dirs[0] for k, dirs in sorted(by_number.items())}


def _fold_number(folder: Path) -> int:
    """``k`` of a ``fold_<k>`` folder, refused unless written ``fold_1``, ``fold_2``, ..."""
    k = int(folder.name[len("fold_") :])
    if folder.name != f"fold_{k}" or k == 0:
        raise ConfigError(f"--folds-file {folder}: fold folders are named fold_1, fold_2, ... (no leading zeros)")
    return k


def _fold_file(folder: Path, part: str, k: int) -> Path:
    """The one ``<dataset>_<part>_fold_<k>.jsonl`` (or ``…_fold<k>.jsonl``) in ``folder``."""
    found = sorted({*folder.glob(f"*_{part}_fold_{k}.jsonl"), *folder.glob(f"*_{part}_fold{k}.jsonl")}, key=natural_key)
    if len(found) > 1:
        raise ConfigError(
            f"--folds-file {folder}: {len(found)} {part} files for fold {k} "
            f"({', '.join(p.name for p in found)}); keep one"
        )
    if not found:
        raise ConfigError(f"--folds-file {folder}: no {part} file (*_{part}_fold_{k}.jsonl)")
    return found[0]


def _keys(path: Path) -> list[str]:
    """The ``key`` of every line of an EmoBox jsonl file, in order."""
    keys = []
    for number, row in iter_jsonl(path, f"--folds-file {path}"):
        key = row.get("key") if isinstance(row, dict) else None
        if not isinstance(key, str) or not key:
            raise ConfigError(
                f"--folds-file {path}, line {number}: not a JSON object with a text 'key' (got {quote(row, 80)})"
            )
        keys.append(key)
    return keys

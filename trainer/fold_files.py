"""Folds from a file (``--folds-file``): a sermtl ``folds.json``, or EmoBox's fold files.

- A ``.json`` file written by sermtl (a run's ``folds.json``): its folds as they are.
- An EmoBox data folder (``data/<dataset>/``, holding ``fold_<k>/`` folders) or the folder
  of its folds: each ``fold_<k>/<dataset>_train_fold_<k>.jsonl`` and ``…_test_fold_<k>.jsonl``
  (``…_fold<k>.jsonl`` too) lists one JSON object per line whose ``key`` is the utterance id
  (as ``sermtl prepare --corpus emobox`` names it). EmoBox gives no validation set: a
  ``valid_fraction`` of each fold's training rows, stratified by emotion and drawn by the
  seed, is held out for choosing the epoch (``--valid-fraction 0``: none, the last epoch).

Every id must be in the store, and no utterance may be tested in two folds: one line
naming the file and the first offender otherwise.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from featurestore.errors import SermtlError
from featurestore.manifest import Manifest
from featurestore.textfile import read_text_file
from trainer.folds import Fold, FoldList, _rng, _stratified_sample, load_folds, natural_key


def read_folds_file(path: str | Path, manifest: Manifest, valid_fraction: float = 0.2, seed: int = 0,
                    stratify: str = "emotion") -> FoldList:
    """The folds ``path`` describes (module docstring), checked against ``manifest``."""
    path = Path(path)
    if path.is_file():
        folds, _ = load_folds(path)
        sources = {f.fold: path for f in folds}
    elif path.is_dir():
        folds, sources = _emobox_folds(path, manifest, valid_fraction, seed, stratify)
    else:
        raise SermtlError(f"--folds-file {path}: no such file or folder")
    known = set(manifest.ids())
    tested: dict[str, int] = {}
    for fold in folds:
        for utt_id in (*fold.train, *fold.valid, *fold.test):
            if utt_id not in known:
                raise SermtlError(f"--folds-file {sources[fold.fold]}: id {utt_id!r} (fold {fold.fold}) is not in the store")
        for utt_id in fold.test:
            if utt_id in tested:
                raise SermtlError(f"--folds-file {sources[fold.fold]}: {utt_id!r} is tested in folds "
                                  f"{tested[utt_id]} and {fold.fold}; test sets must not overlap")
            tested[utt_id] = fold.fold
    return FoldList(folds, {"protocol": "file", "path": str(path), "valid_fraction": valid_fraction, "seed": seed})


def _emobox_folds(folder: Path, manifest: Manifest, valid_fraction: float, seed: int,
                  stratify: str) -> tuple[list[Fold], dict[int, Path]]:
    fold_dirs = {int(m.group(1)): d for d in folder.iterdir() if d.is_dir() and (m := re.fullmatch(r"fold_(\d+)", d.name))}
    if not fold_dirs and re.fullmatch(r"fold_\d+", folder.name):
        fold_dirs = {int(folder.name.split("_")[1]): folder}
    if not fold_dirs:
        raise SermtlError(f"--folds-file {folder}: no fold_<k> folders (EmoBox fold files) and not a .json fold file")
    stratum = {u: str(manifest[u][stratify]) if stratify in manifest.columns else "-" for u in manifest.ids()}
    folds, sources = [], {}
    for k in sorted(fold_dirs):
        train_file, test_file = (_fold_file(fold_dirs[k], part, k) for part in ("train", "test"))
        train, test = _keys(train_file), _keys(test_file)
        known_train = [u for u in train if u in stratum]
        valid = _stratified_sample(known_train, stratum, valid_fraction, _rng(seed, k)) if valid_fraction else set()
        folds.append(Fold(k, [u for u in train if u not in valid], [u for u in train if u in valid], test))
        sources[k] = test_file
    return folds, sources


def _fold_file(folder: Path, part: str, k: int) -> Path:
    """``<dataset>_<part>_fold_<k>.jsonl`` (or ``…_fold<k>.jsonl``) in ``folder``."""
    for pattern in (f"*_{part}_fold_{k}.jsonl", f"*_{part}_fold{k}.jsonl"):
        found = sorted(folder.glob(pattern), key=natural_key)
        if found:
            return found[0]
    raise SermtlError(f"--folds-file {folder}: no {part} file (*_{part}_fold_{k}.jsonl)")


def _keys(path: Path) -> list[str]:
    """The ``key`` of every line of an EmoBox jsonl file, in order."""
    keys = []
    for number, line in enumerate(read_text_file(path, f"--folds-file {path}").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            keys.append(str(row["key"]))
        except (ValueError, KeyError, TypeError, RecursionError):
            raise SermtlError(f"--folds-file {path}, line {number}: not a JSON object with a 'key'") from None
    return keys

"""Hostile input, table-driven: every case runs one command as a careless user or an
attacker would, and checks the outcome.

What every case checks is in :mod:`tests.hostile.harness`. Cases that are handled rather
than refused (a damaged index repaired, a link at a temporary name ignored) exit 0 and check
their own result. This file holds the first round's categories; the doors opened since
have their own files beside it. The categories and their counts are listed in
docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import pickle
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from featurestore.locking import ExclusiveLock
from tests.conftest import write_manifest, write_tone
from tests.hostile.conftest import TRAIN, Workspace
from tests.hostile.harness import Argv, Case, case_ids, check_case, invoke


# -- builders --------------------------------------------------------------------------------
def _extract(ws: Workspace, *extra: Any, store: Path | None = None, manifest: Path | None = None) -> Argv:
    return ["extract", "--manifest", manifest or ws.manifest, "--feature", "mfcc", "--store", store or ws.zarr, *extra]


def _train(ws: Workspace, *extra: Any, command: str = "train") -> Argv:
    return [command, "--store", ws.base["zarr"], *TRAIN, "--out", ws.tmp / "new_run", *extra]


def _resume(ws: Workspace, *extra: Any) -> Argv:
    """The base run's own cv command, into a copy of its directory."""
    return ["cv", "--store", ws.base["zarr"], *TRAIN, "--out", ws.run, *extra]


def _predict(ws: Workspace, audio: Path, *extra: Any, checkpoint: Path | None = None) -> Argv:
    return ["predict", "--checkpoint", checkpoint or ws.checkpoint, audio, *extra]


def _predict_with(ws: Workspace, checkpoint: Path) -> Argv:
    """``predict`` of a good audio file with ``checkpoint``."""
    return _predict(ws, ws.base["root"] / "audio" / "u00.wav", checkpoint=checkpoint)


def _wave_header(path: Path, rate: int, samples: int) -> Path:
    """A 16-bit WAV file declaring ``rate`` Hz."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.sin(np.arange(samples)) * 1000).astype("<i2").tobytes())
    return path


def _one_sample(path: Path) -> Path:
    sf.write(str(path), np.array([0.1], np.float32), 16000)
    return path


class _RunsCommand:
    """Pickled, it calls ``os.system`` when unpickled (what a malicious checkpoint holds)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _RunsExec:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def _malicious_checkpoint(ws: Workspace, payload: Any) -> Path:
    checkpoint = torch.load(ws.checkpoint, weights_only=True)
    checkpoint["extra"] = payload
    path = ws.tmp / "shared.pt"
    torch.save(checkpoint, path)
    return path


def _marker(ws: Workspace) -> Path:
    return ws.tmp / "code-ran"


def _no_marker(ws: Workspace) -> None:
    assert not _marker(ws).exists(), "code from the file ran"


def _victim_intact(ws: Workspace) -> None:
    assert (ws.tmp / "notes.txt").read_text() == "precious notes\n"


def _plant_link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def _replace_with_link(path: Path, target: Path) -> None:
    path.unlink(missing_ok=True)
    os.symlink(target, path)


def _damage_index(store: Path, rows: dict[int, tuple[int, int]]) -> None:
    from featurestore.store.base import backend_for_path

    backend = backend_for_path(store).open(store, writable=True)
    for row, value in rows.items():
        backend.array("index")[row] = value
    backend.flush()
    backend.close()


def _random_bytes_in_index_chunk(ws: Workspace) -> Argv:
    chunk = ws.zarr / "index" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[16:64] = np.random.default_rng(0).integers(0, 256, 48, dtype=np.uint8).tobytes()
    chunk.write_bytes(bytes(data))
    return _extract(ws, "--repair")


def _garbled_hdf5_header(ws: Workspace) -> Path:
    """The HDF5 copy with bytes of its object headers overwritten (its superblock kept)."""
    data = bytearray(ws.hdf5.read_bytes())
    data[96:2048] = bytes(np.random.default_rng(1).integers(0, 256, 2048 - 96, dtype=np.uint8))
    ws.hdf5.write_bytes(bytes(data))
    return ws.hdf5


def _store_size(store: Path) -> int:
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file())


def _small_store(ws: Workspace) -> None:
    assert _store_size(ws.zarr) < 5 * _store_size(ws.base["zarr"]), "repair grew the store"


def _pickled_model_folder(ws: Workspace) -> Path:
    from featurestore.features.random_models import save_random_ssl_model

    folder = save_random_ssl_model(ws.tmp / "model")
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"w": _RunsCommand(f"touch {_marker(ws)}")}, handle)
    return folder


def _run_on_workspace_store(ws: Workspace) -> None:
    """Point the copied run at the workspace's own copy of the store (as if trained on it)."""
    config = json.loads((ws.run / "config.json").read_text())
    config["store"] = str(ws.zarr.resolve())
    (ws.run / "config.json").write_text(json.dumps(config))


def _grown_store(ws: Workspace) -> Argv:
    _run_on_workspace_store(ws)
    extra = write_tone(ws.tmp / "extra.wav", 1.0, seed=99)
    invoke(_extract(ws, manifest=ws.manifest_with({"utt_id": "extra", "path": str(extra)})))
    return ["cv", "--store", ws.zarr, *TRAIN, "--out", ws.run]


def _same_name_other_audio(ws: Workspace) -> Argv:
    """The store was made from a copy of the corpus whose u00.wav is then re-recorded."""
    rows = ws.rows()
    folder = ws.tmp / "corpus"
    folder.mkdir()
    for row in rows:
        target = folder / Path(row["path"]).name
        target.write_bytes(Path(row["path"]).read_bytes())
        row["path"] = str(target)
    manifest = write_manifest(ws.tmp / "local.csv", rows)
    store = ws.tmp / "local.zarr"
    assert invoke(_extract(ws, store=store, manifest=manifest)).exit_code == 0
    write_tone(folder / "u00.wav", 1.3, freq=500, seed=7)
    return _extract(ws, store=store, manifest=manifest)


def _same_name_other_audio_repaired(ws: Workspace) -> Argv:
    argv = _same_name_other_audio(ws)
    assert invoke(argv).exit_code == 1
    return [*argv, "--repair"]


def _verify_local_store(ws: Workspace) -> None:
    result = invoke(["verify", ws.tmp / "local.zarr"])
    assert result.exit_code == 0, result.output


def _table3_one_feature(ws: Workspace) -> Argv:
    """IEMOCAP's MFCC store given, its wav2vec2 store neither given nor extractable."""
    return [
        "experiment",
        "table3",
        "--out",
        ws.tmp / "exp",
        "--store",
        f"iemocap:mfcc={ws.base['iemocap']}",
        "--corpus",
        "iemocap",
        "--epochs",
        "1",
        "--channels",
        "8",
        "--batch-size",
        "8",
        "--device",
        "cpu",
    ]


def _lock_held(ws: Workspace) -> Argv:
    ws.lock = ExclusiveLock(ws.run / "run.lock", "test")
    return _resume(ws)


def _manifest_text(ws: Workspace, text: bytes) -> Path:
    path = ws.tmp / "bad.csv"
    path.write_bytes(text)
    return path


def _one_expression_store(ws: Workspace) -> Argv:
    rows = [{**row, "expression": "acted"} for row in ws.rows()]
    manifest = write_manifest(ws.tmp / "acted.csv", rows)
    store = ws.tmp / "acted.zarr"
    assert invoke(_extract(ws, store=store, manifest=manifest)).exit_code == 0
    return ["cv", "--store", store, *TRAIN, "--out", ws.tmp / "acted_run"]


def _no_run_dir(name: str) -> Callable[[Workspace], None]:
    def check(ws: Workspace) -> None:
        assert not (ws.tmp / name).exists(), f"a refused run left {name} behind"

    return check


# -- the table ---------------------------------------------------------------------------------
BAD_TRAINING_VALUES = [
    ("--lr", "inf"),
    ("--lr", "nan"),
    ("--lr", "-1"),
    ("--lr", "0"),
    ("--epochs", "0"),
    ("--epochs", "-3"),
    ("--crop-seconds", "0"),
    ("--crop-seconds", "nan"),
    ("--crop-seconds", "inf"),
    ("--batch-size", "0"),
    ("--batch-size", "1"),
    ("--channels", "0"),
    ("--channels", "7"),
    ("--dropout", "1"),
    ("--dropout", "-0.1"),
    ("--alpha0", "2"),
    ("--alpha0", "nan"),
    ("--alpha-step", "5"),
    ("--alpha-max", "1.5"),
    ("--margin", "-1"),
    ("--scale", "0"),
    ("--weight-decay", "-1"),
    ("--weight-decay", "inf"),
    ("--average-best", "0"),
    ("--average-best", "5"),
    ("--seed", "-1"),
    ("--embedding-dim", "0"),
    ("--device", "bogus"),
    ("--layer", "foo"),
    ("--folds", "1"),
    ("--valid-fraction", "1.5"),
    ("--aux", "no_such_column"),
    ("--label", "no_such_column"),
]
#: Values outside a declared range, refused like the training options' (a ConfigError, exit 1).
BAD_RUN_VALUES = [("cv", "--repeats", "0"), ("sweep", "--repeats", "0"), ("train", "--fold", "0")]
UNPARSABLE_FLAGS = [
    ("train", "--epochs", "ten"),
    ("train", "--input-norm", "utterence"),
    ("train", "--augment", "mixup"),
]
BAD_EXTRACT_VALUES = [
    ("--batch-seconds", "nan", "--batch-seconds"),
    ("--batch-seconds", "0", "--batch-seconds"),
    ("--batch-seconds", "-1", "--batch-seconds"),
    ("--batch-seconds", "inf", "--batch-seconds"),
    ("--max-batch", "0", "--max-batch"),
    ("--device", "bogus", "--device"),
]

CASES: list[Case] = [
    # -- code in files -----------------------------------------------------------------------
    Case(
        "code execution",
        "checkpoint that calls os.system when unpickled",
        lambda ws: _predict_with(ws, _malicious_checkpoint(ws, _RunsCommand(f"touch {_marker(ws)}"))),
        culprit="shared.pt",
        after=_no_marker,
    ),
    Case(
        "code execution",
        "checkpoint that calls exec when unpickled",
        lambda ws: _predict_with(ws, _malicious_checkpoint(ws, _RunsExec(f"open({str(_marker(ws))!r}, 'w')"))),
        culprit="shared.pt",
        after=_no_marker,
    ),
    Case(
        "code execution",
        "checkpoint holding an arbitrary object",
        lambda ws: _predict_with(ws, _malicious_checkpoint(ws, Path("/etc"))),
        culprit="shared.pt: it holds objects other than tensors",
    ),
    Case(
        "code execution",
        "--model folder whose weights are a pickle that runs a command",
        lambda ws: _extract(ws, "--feature", "w2v2", "--model", _pickled_model_folder(ws), store=ws.tmp / "w.zarr"),
        culprit="--model",
        after=_no_marker,
    ),
    Case(
        "code execution",
        "truncated checkpoint",
        lambda ws: _predict_with(
            ws, (ws.tmp / "cut.pt").write_bytes(ws.checkpoint.read_bytes()[:500]) and ws.tmp / "cut.pt"
        ),
        culprit="cut.pt",
    ),
    Case(
        "code execution",
        "checkpoint that is a dict without a network",
        lambda ws: (torch.save({"something": 1}, ws.tmp / "d.pt"), _predict_with(ws, ws.tmp / "d.pt"))[1],
        culprit="d.pt",
    ),
    Case(
        "code execution",
        "random bytes as a checkpoint",
        lambda ws: _predict_with(ws, (ws.tmp / "r.pt").write_bytes(os.urandom(4096)) and ws.tmp / "r.pt"),
        culprit="r.pt",
    ),
    Case(
        "code execution",
        "checkpoint whose network config has unknown keys",
        lambda ws: _predict_with(ws, _with_network(ws, {"bogus": 1})),
        culprit="checkpoint",
    ),
    # -- links and other people's files --------------------------------------------------------
    Case(
        "links",
        "symlink planted at STORE.lock",
        lambda ws: (_plant_link(ws.tmp / "new.zarr.lock", ws.victim()), _extract(ws, store=ws.tmp / "new.zarr"))[1],
        culprit="new.zarr.lock",
        after=_victim_intact,
    ),
    Case(
        "links",
        "hard link planted at STORE.lock",
        lambda ws: (os.link(ws.victim(), ws.tmp / "new.zarr.lock"), _extract(ws, store=ws.tmp / "new.zarr"))[1],
        culprit="new.zarr.lock",
        after=_victim_intact,
    ),
    Case(
        "links",
        "a file of the user's named STORE.lock",
        lambda ws: ((ws.tmp / "new.zarr.lock").write_text("precious notes\n"), _extract(ws, store=ws.tmp / "new.zarr"))[
            1
        ],
        culprit="new.zarr.lock",
        after=lambda ws: (
            (ws.tmp / "new.zarr.lock").read_text() == "precious notes\n" or pytest.fail("lock file changed")
        ),
    ),
    Case(
        "links",
        "symlink planted at RUN/run.lock",
        lambda ws: (_replace_with_link(ws.run / "run.lock", ws.victim()), _resume(ws))[1],
        culprit="run.lock",
        after=_victim_intact,
    ),
    Case(
        "links",
        "a directory of the user's named STORE.partial",
        lambda ws: (
            (ws.tmp / "new.zarr.partial").mkdir(),
            (ws.tmp / "new.zarr.partial" / "mine.txt").write_text("x"),
            _extract(ws, store=ws.tmp / "new.zarr"),
        )[2],
        culprit="new.zarr.partial",
        after=lambda ws: (ws.tmp / "new.zarr.partial" / "mine.txt").read_text() == "x" or pytest.fail(),
    ),
    Case(
        "links",
        "a folder of the user's named STORE.shards",
        lambda ws: (
            (ws.tmp / "new.zarr.shards").mkdir(),
            (ws.tmp / "new.zarr.shards" / "mine.txt").write_text("x"),
            _extract(ws, store=ws.tmp / "new.zarr"),
        )[2],
        culprit="new.zarr.shards",
        after=lambda ws: (ws.tmp / "new.zarr.shards" / "mine.txt").read_text() == "x" or pytest.fail(),
    ),
    Case(
        "links",
        "STORE.partial is a link to a folder of the user's",
        lambda ws: (
            (ws.tmp / "mine").mkdir(),
            (ws.tmp / "mine" / "a.txt").write_text("x"),
            _plant_link(ws.tmp / "new.h5.partial", ws.tmp / "mine"),
            _extract(ws, store=ws.tmp / "new.h5"),
        )[3],
        culprit="new.h5.partial",
        after=lambda ws: (ws.tmp / "mine" / "a.txt").read_text() == "x" or pytest.fail(),
    ),
    Case(
        "links",
        "symlink at the old fixed temporary name RUN/config.json.tmp",
        lambda ws: (_plant_link(ws.tmp / "new_run" / "config.json.tmp", ws.victim()), _train(ws))[1],
        code=0,
        after=_victim_intact,
    ),
    Case(
        "links",
        "symlink at RUN/results.json of a finished run",
        lambda ws: (_replace_with_link(ws.run / "results.json", ws.victim()), _resume(ws))[1],
        code=0,
        after=lambda ws: (_victim_intact(ws), json.loads((ws.run / "results.json").read_text())["uwa"]),
    ),
    Case(
        "links",
        "symlink at the manifest's old temporary name",
        lambda ws: (
            _plant_link(ws.tmp / "m.csv.tmp", ws.victim()),
            ["prepare", "--corpus", "csv", "--root", ws.manifest, "--out", ws.tmp / "m.csv"],
        )[1],
        code=0,
        after=_victim_intact,
    ),
    Case(
        "links",
        "STORE.partial left by a killed sermtl writer is cleared",
        lambda ws: (
            (ws.tmp / "new.zarr.partial").mkdir(),
            (ws.tmp / "new.zarr.partial.sermtl").touch(),
            _extract(ws, store=ws.tmp / "new.zarr"),
        )[2],
        code=0,
        after=lambda ws: not (ws.tmp / "new.zarr.partial").exists() or pytest.fail("partial left"),
    ),
    # -- damaged stores -------------------------------------------------------------------------
    Case(
        "damaged store",
        "index row at offset 10^12, repaired",
        lambda ws: (_damage_index(ws.zarr, {3: (10**12, 50)}), _extract(ws, "--repair"))[1],
        code=0,
        after=_small_store,
    ),
    Case(
        "damaged store",
        "two index rows at offset 10^12, repaired",
        lambda ws: (_damage_index(ws.zarr, {3: (10**12, 50), 7: (10**12 + 9, 10**9)}), _extract(ws, "--repair"))[1],
        code=0,
        after=_small_store,
    ),
    Case(
        "damaged store",
        "index rows out of range, plain extract recomputes them",
        lambda ws: (_damage_index(ws.zarr, {0: (-5, 10), 1: (0, 0), 2: (2**62, 2**62)}), _extract(ws))[1],
        code=0,
        after=_small_store,
    ),
    Case(
        "damaged store",
        "48 random bytes in the index chunk, repaired",
        _random_bytes_in_index_chunk,
        code=0,
        after=_small_store,
    ),
    Case(
        "damaged store",
        "HDF5 index row at offset 10^12, repaired",
        lambda ws: (_damage_index(ws.hdf5, {2: (10**12, 40)}), _extract(ws, "--repair", store=ws.hdf5))[1],
        code=0,
    ),
    Case(
        "damaged store",
        "info on an HDF5 store with garbled object headers",
        lambda ws: ["info", _garbled_hdf5_header(ws)],
        culprit="s.h5",
        verify=False,
    ),
    Case(
        "damaged store",
        "verify on an HDF5 store with garbled object headers",
        lambda ws: ["verify", _garbled_hdf5_header(ws)],
        culprit="s.h5",
        verify=False,
    ),
    Case(
        "damaged store",
        "zarr.json replaced by garbage",
        lambda ws: ((ws.zarr / "zarr.json").write_text("{garbage"), ["info", ws.zarr])[1],
        culprit="s.zarr",
        verify=False,
    ),
    Case(
        "damaged store",
        "train on a store with an index row out of range",
        lambda ws: (_damage_index(ws.zarr, {4: (10**12, 50)}), [*_train(ws)[:2], ws.zarr, *_train(ws)[3:]])[1],
        culprit="verify",
        verify=False,
    ),
    # -- audio and manifests --------------------------------------------------------------------
    Case(
        "audio",
        "a 1-sample wav",
        lambda ws: _extract(
            ws, manifest=ws.manifest_with({"utt_id": "tiny", "path": str(_one_sample(ws.tmp / "tiny.wav"))})
        ),
        culprit="tiny.wav",
    ),
    Case(
        "audio",
        "a 2.4 KB wav declaring 1 Hz",
        lambda ws: _extract(
            ws, manifest=ws.manifest_with({"utt_id": "slow", "path": str(_wave_header(ws.tmp / "slow.wav", 1, 1200))})
        ),
        culprit="slow.wav",
    ),
    Case(
        "audio",
        "a wav declaring 10 MHz",
        lambda ws: _extract(
            ws,
            manifest=ws.manifest_with(
                {"utt_id": "fast", "path": str(_wave_header(ws.tmp / "fast.wav", 10_000_000, 1200))}
            ),
        ),
        culprit="fast.wav",
    ),
    Case(
        "audio",
        "audio longer than --max-duration",
        lambda ws: _extract(ws, "--max-duration", "0.6", store=ws.tmp / "new.zarr"),
        culprit="--max-duration",
    ),
    Case(
        "audio",
        "a 1-sample wav skipped with --on-error skip",
        lambda ws: _extract(
            ws,
            "--on-error",
            "skip",
            manifest=ws.manifest_with({"utt_id": "tiny", "path": str(_one_sample(ws.tmp / "tiny.wav"))}),
        ),
        code=0,
        verify=False,
        after=lambda ws: "tiny" in invoke(["verify", ws.zarr]).output or pytest.fail("skip not listed"),
    ),
    Case(
        "manifest",
        "negative segment start",
        lambda ws: _extract(
            ws,
            manifest=ws.manifest_with(
                {"utt_id": "neg", "path": str(ws.rows()[0]["path"]), "start": "-1", "end": "0.3"}
            ),
        ),
        culprit="'start'",
    ),
    Case(
        "manifest",
        "segment end before start",
        lambda ws: _extract(
            ws,
            manifest=ws.manifest_with(
                {"utt_id": "rev", "path": str(ws.rows()[0]["path"]), "start": "0.4", "end": "0.2"}
            ),
        ),
        culprit="rev",
    ),
    Case(
        "manifest",
        "duration=inf",
        lambda ws: _extract(
            ws, manifest=ws.manifest_with({"utt_id": "inf", "path": str(ws.rows()[0]["path"]), "duration": "inf"})
        ),
        culprit="duration",
    ),
    Case(
        "manifest",
        "duration=-1",
        lambda ws: _extract(
            ws, manifest=ws.manifest_with({"utt_id": "neg", "path": str(ws.rows()[0]["path"]), "duration": "-1"})
        ),
        culprit="duration",
    ),
    Case(
        "manifest",
        "a NUL byte in a path",
        lambda ws: _extract(ws, manifest=ws.manifest_with({"utt_id": "nul", "path": "a\x00b.wav"})),
        culprit="NUL",
    ),
    Case(
        "manifest",
        "a manifest that is not UTF-8",
        lambda ws: _extract(
            ws, manifest=_manifest_text(ws, "utt_id,path,emotion,speaker\nü,a.wav,sad,s\n".encode("latin-1"))
        ),
        culprit="bad.csv",
    ),
    Case(
        "manifest",
        "a manifest without the required columns",
        lambda ws: _extract(ws, manifest=_manifest_text(ws, b"id,file\nx,y.wav\n")),
        culprit="bad.csv",
    ),
    Case(
        "manifest",
        "a manifest that does not exist",
        lambda ws: _extract(ws, manifest=ws.tmp / "nothing.csv"),
        culprit="nothing.csv",
    ),
    Case(
        "manifest",
        "binary junk as a manifest",
        lambda ws: _extract(ws, manifest=_manifest_text(ws, os.urandom(2000))),
        culprit="bad.csv",
    ),
    Case(
        "manifest",
        "a duplicate utterance id",
        lambda ws: _extract(ws, manifest=ws.manifest_with({"utt_id": "u00", "path": str(ws.rows()[1]["path"])})),
        culprit="u00",
    ),
    Case("manifest", "a file of the same name with other audio", _same_name_other_audio, culprit="u00", verify=False),
    Case(
        "manifest",
        "a file of the same name with other audio, then --repair",
        _same_name_other_audio_repaired,
        code=0,
        after=_verify_local_store,
    ),
    # -- extraction flags ---------------------------------------------------------------------
    *[
        Case(
            "extraction values",
            f"extract {flag} {value}",
            lambda ws, f=flag, v=value: _extract(ws, f, v),
            culprit=culprit,
        )
        for flag, value, culprit in BAD_EXTRACT_VALUES
    ],
    Case("extraction values", "--store .", lambda ws: _extract(ws, store=Path(".")), culprit="."),
    Case("extraction values", "--store /", lambda ws: _extract(ws, store=Path("/")), culprit="/"),
    Case(
        "extraction values", "--format bogus", lambda ws: _extract(ws, "--format", "bogus"), code=2, culprit="--format"
    ),
    Case(
        "extraction values",
        "--store on a read-only file system",
        lambda ws: _extract(ws, store=Path("/proc/sermtl.zarr")),
        culprit="/proc/sermtl.zarr",
    ),
    Case(
        "extraction values",
        "--max-duration 0",
        lambda ws: _extract(ws, "--max-duration", "0"),
        culprit="--max-duration",
    ),
    Case(
        "extraction values",
        "--chunk-seconds -1",
        lambda ws: _extract(ws, "--chunk-seconds", "-1"),
        culprit="--chunk-seconds",
    ),
    # -- training values ---------------------------------------------------------------------
    *[
        Case(
            "training values",
            f"train {flag} {value}",
            lambda ws, f=flag, v=value: _train(ws, f, v),
            culprit=flag,
            after=_no_run_dir("new_run"),
        )
        for flag, value in BAD_TRAINING_VALUES
    ],
    *[
        Case(
            "training values",
            f"{command} {flag} {value}",
            lambda ws, c=command, f=flag, v=value: _train(ws, f, v, command=c),
            code=2,
            culprit=flag,
            after=_no_run_dir("new_run"),
        )
        for command, flag, value in UNPARSABLE_FLAGS
    ],
    *[
        Case(
            "training values",
            f"{command} {flag} {value}",
            lambda ws, c=command, f=flag, v=value: _train(ws, f, v, command=c),
            culprit=flag,
            after=_no_run_dir("new_run"),
        )
        for command, flag, value in BAD_RUN_VALUES
    ],
    Case(
        "training values",
        "--aux expression on a store with one expression class",
        lambda ws: [*_one_expression_store(ws), "--aux", "expression"],
        culprit="--aux none",
        after=_no_run_dir("acted_run"),
    ),
    Case(
        "training values",
        "the default --aux auto on a store with one expression class trains without it",
        _one_expression_store,
        code=0,
        after=lambda ws: (
            json.loads((ws.tmp / "acted_run" / "config.json").read_text())["train"]["aux"] == "none"
            or pytest.fail("aux not resolved to none")
        ),
    ),
    Case(
        "training values",
        "--fold beyond the protocol",
        lambda ws: _train(ws, "--fold", "9"),
        culprit="--fold 9",
        after=_no_run_dir("new_run"),
    ),
    Case(
        "training values",
        "--protocol split without values",
        lambda ws: [
            *_train(ws)[:3],
            "--protocol",
            "split",
            "--by",
            "speaker",
            "--epochs",
            "1",
            "--out",
            ws.tmp / "new_run",
        ],
        culprit="split",
        after=_no_run_dir("new_run"),
    ),
    Case(
        "training values",
        "--by a column the store lacks",
        lambda ws: [
            "cv",
            "--store",
            ws.base["zarr"],
            "--protocol",
            "loso",
            "--by",
            "room",
            "--out",
            ws.tmp / "new_run",
        ],
        culprit="room",
        after=_no_run_dir("new_run"),
    ),
    Case(
        "training values",
        "a train set one more than a multiple of the batch size trains",
        lambda ws: _train(ws, "--batch-size", "5", "--aux", "none"),
        code=0,
        verify=False,
        after=lambda ws: (ws.tmp / "new_run" / "fold_1" / "metrics.json").is_file() or pytest.fail(),
    ),
    # -- run directories ---------------------------------------------------------------------
    Case("run directories", "cv resumed after the store grew", _grown_store, culprit="entries"),
    Case(
        "run directories",
        "a finished fold whose checkpoint.pt was deleted",
        lambda ws: ((ws.run / "fold_1" / "checkpoint.pt").unlink(), _resume(ws))[1],
        culprit="checkpoint.pt",
    ),
    Case(
        "run directories",
        "a finished fold whose metrics.json is damaged",
        lambda ws: ((ws.run / "fold_2" / "metrics.json").write_text("{"), _resume(ws))[1],
        culprit="metrics.json",
    ),
    Case(
        "run directories",
        "a finished fold whose metrics.json is a list",
        lambda ws: ((ws.run / "fold_2" / "metrics.json").write_text("[]"), _resume(ws))[1],
        culprit="metrics.json",
    ),
    Case(
        "run directories",
        "a damaged config.json",
        lambda ws: ((ws.run / "config.json").write_text('{"store": '), _resume(ws))[1],
        culprit="config.json",
    ),
    Case(
        "run directories",
        "config.json holding a list",
        lambda ws: ((ws.run / "config.json").write_text("[1, 2]"), _resume(ws))[1],
        culprit="config.json",
    ),
    Case(
        "run directories",
        "config.json without a train section",
        lambda ws: ((ws.run / "config.json").write_text('{"store": "x"}'), _resume(ws))[1],
        culprit="config.json",
    ),
    Case(
        "run directories",
        "a damaged folds.json",
        lambda ws: ((ws.run / "folds.json").write_text("nope"), _resume(ws))[1],
        culprit="folds.json",
    ),
    Case("run directories", "two cv into one --out", _lock_held, culprit="another process"),
    Case(
        "run directories",
        "another config into the same --out",
        lambda ws: _resume(ws, "--lr", "0.01"),
        culprit="train.lr",
    ),
    Case(
        "run directories",
        "--out on a read-only file system",
        lambda ws: [*_train(ws)[:-2], "--out", "/proc/sermtl_run"],
        culprit="/proc/sermtl_run",
    ),
    Case(
        "run directories",
        "--out is a file",
        lambda ws: [*_train(ws)[:-2], "--out", ws.manifest],
        code=2,
        culprit="manifest.csv",
    ),
    Case(
        "run directories",
        "report on a damaged results.json",
        lambda ws: ((ws.run / "results.json").write_text("{{"), ["report", ws.run])[1],
        culprit="results.json",
    ),
    Case(
        "run directories",
        "report on a damaged history.json",
        lambda ws: ((ws.run / "fold_1" / "history.json").write_text("{}"), ["report", ws.run])[1],
        culprit="history.json",
    ),
    Case(
        "run directories",
        "compare against a run whose folds.json is damaged",
        lambda ws: ((ws.run / "folds.json").write_text("nope"), ["compare", ws.base["run"], ws.run])[1],
        culprit="folds.json",
    ),
    Case(
        "run directories",
        "compare with a folder that is not a run",
        lambda ws: ["compare", ws.base["run"], ws.tmp],
        culprit="neither a cv run",
    ),
    Case(
        "run directories", "report on a folder that is not a run", lambda ws: ["report", ws.tmp], culprit="config.json"
    ),
    Case(
        "run directories",
        "report --paper with damaged JSON",
        lambda ws: ["report", ws.run, "--paper", _manifest_text(ws, b"{nope")],
        culprit="bad.csv",
    ),
    # -- prediction ----------------------------------------------------------------------------
    Case("prediction", "a 1-sample wav", lambda ws: _predict(ws, _one_sample(ws.tmp / "tiny.wav")), culprit="tiny.wav"),
    Case(
        "prediction",
        "a wav declaring 1 Hz",
        lambda ws: _predict(ws, _wave_header(ws.tmp / "slow.wav", 1, 1200)),
        culprit="slow.wav",
    ),
    Case(
        "prediction",
        "audio longer than --max-duration",
        lambda ws: _predict(ws, write_tone(ws.tmp / "long.wav", 2.0), "--max-duration", "1"),
        culprit="long.wav",
    ),
    Case("prediction", "a file that does not exist", lambda ws: _predict(ws, ws.tmp / "gone.wav"), culprit="gone.wav"),
    Case("prediction", "a folder without audio", lambda ws: _predict(ws, ws.tmp), culprit=lambda ws: str(ws.tmp)),
    Case(
        "prediction",
        "--device bogus",
        lambda ws: _predict(ws, ws.base["root"] / "audio" / "u00.wav", "--device", "bogus"),
        culprit="--device",
    ),
    Case(
        "prediction",
        "a checkpoint that does not exist",
        lambda ws: ["predict", "--checkpoint", ws.tmp / "none.pt", ws.manifest],
        culprit="none.pt",
    ),
    # -- other commands --------------------------------------------------------------------------
    Case("other commands", "table3 with one feature's store only", _table3_one_feature, culprit="w2v2"),
    Case(
        "other commands",
        "experiment --store with a bad key",
        lambda ws: ["experiment", "table3", "--out", ws.tmp / "exp", "--store", f"iemocap={ws.base['zarr']}"],
        culprit="--store",
    ),
    Case(
        "other commands",
        "info on a path that does not exist",
        lambda ws: ["info", ws.tmp / "none.zarr"],
        culprit="none.zarr",
    ),
    Case("other commands", "verify on a plain folder", lambda ws: ["verify", ws.tmp], culprit=lambda ws: str(ws.tmp)),
    Case("other commands", "verify on a text file", lambda ws: ["verify", ws.manifest], culprit="manifest.csv"),
    Case(
        "other commands",
        "baseline --by a missing column",
        lambda ws: ["baseline", "--store", ws.base["zarr"], "--protocol", "group-kfold", "--by", "room"],
        culprit="room",
    ),
    Case(
        "other commands",
        "baseline --seed -1",
        lambda ws: ["baseline", "--store", ws.base["zarr"], "--seed", "-1"],
        culprit="--seed",
    ),
    Case(
        "other commands",
        "prepare with a recipe that does not exist",
        lambda ws: ["prepare", "--corpus", "nosuch", "--root", ws.tmp],
        code=2,
        culprit="nosuch",
    ),
    Case(
        "other commands",
        "prepare --option without a value",
        lambda ws: ["prepare", "--corpus", "csv", "--root", ws.manifest, "--option", "novalue"],
        culprit="--option",
    ),
    # -- metadata files (configs, grids, fold lists, corpus metadata) ---------------------------
    Case(
        "metadata files",
        "--config is a FIFO (reading it would block forever)",
        lambda ws: _train(ws, "--config", _fifo(ws.tmp / "c.yaml")),
        culprit="c.yaml: not a regular file",
        after=_no_run_dir("new_run"),
    ),
    Case(
        "metadata files",
        "--config is a folder",
        lambda ws: _train(ws, "--config", (ws.tmp / "c.yaml").mkdir() or ws.tmp / "c.yaml"),
        culprit="c.yaml: not a regular file",
    ),
    Case(
        "metadata files",
        "--grid-file linked to /dev/zero (reading it never ends)",
        lambda ws: _sweep(ws, _linked_to_dev_zero(ws.tmp / "g.yaml")),
        culprit="g.yaml: not a regular file",
        after=_no_run_dir("sweep"),
    ),
    Case(
        "metadata files",
        "a sparse 600 MiB --config",
        lambda ws: _train(ws, "--config", _sparse(ws.tmp / "c.yaml", 600 * 2**20)),
        culprit="c.yaml: 600 MiB is more than",
    ),
    Case(
        "metadata files",
        "--config nested 100000 lists deep",
        lambda ws: _train(ws, "--config", _deep(ws.tmp / "c.yaml")),
        culprit="c.yaml: not valid YAML",
    ),
    Case(
        "metadata files",
        "--config holding a YAML alias bomb (10^9 strings if expanded)",
        lambda ws: _train(ws, "--config", _alias_bomb(ws.tmp / "c.yaml")),
        culprit="c.yaml",
    ),
    Case(
        "metadata files",
        "--folds-file nested 100000 lists deep",
        lambda ws: _cv_on_folds_file(ws, _deep(ws.tmp / "folds.json")),
        culprit="folds.json",
    ),
    Case(
        "metadata files",
        "EmoBox fold folder whose train list is a FIFO",
        lambda ws: _cv_on_folds_file(ws, _emobox_folds_with_fifo(ws)),
        culprit="x_train_fold_1.jsonl: not a regular file",
    ),
    Case(
        "metadata files",
        "EmoBox metadata linked to /dev/zero",
        lambda ws: [
            "prepare",
            "--corpus",
            "emobox",
            "--root",
            _linked_to_dev_zero(ws.tmp / "x" / "x.jsonl").parent,
            "--out",
            ws.tmp / "m.csv",
        ],
        culprit="x.jsonl: not a regular file",
    ),
    Case(
        "metadata files",
        "report --paper is a FIFO",
        lambda ws: ["report", ws.run, "--paper", _fifo(ws.tmp / "paper.json")],
        culprit="paper.json: not a regular file",
    ),
    Case(
        "metadata files",
        "a run's config.json nested 100000 lists deep",
        lambda ws: (_deep(ws.run / "config.json"), _resume(ws))[1],
        culprit="config.json",
    ),
]


def _sweep(ws: Workspace, grid_file: Path) -> Argv:
    return ["sweep", "--store", ws.base["zarr"], "--grid-file", grid_file, *TRAIN, "--out", ws.tmp / "sweep"]


def _cv_on_folds_file(ws: Workspace, folds_file: Path) -> Argv:
    return ["cv", "--store", ws.base["zarr"], "--folds-file", folds_file, *TRAIN[6:], "--out", ws.tmp / "new_run"]


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _linked_to_dev_zero(path: Path) -> Path:
    _plant_link(path, Path("/dev/zero"))
    return path


def _sparse(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk space (a hole)."""
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def _deep(path: Path) -> Path:
    path.write_text("[" * 100_000)
    return path


def _alias_bomb(path: Path) -> Path:
    """YAML whose nine levels of nine aliases expand to 9^9 strings."""
    lines, previous = ["a: &a [x, x, x, x, x, x, x, x, x]"], "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
        previous = name
    lines.append(f"lr: *{previous}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _emobox_folds_with_fifo(ws: Workspace) -> Path:
    fold = ws.tmp / "emobox_folds" / "fold_1"
    fold.mkdir(parents=True)
    (fold / "x_test_fold_1.jsonl").write_text('{"key": "u00"}\n')
    _fifo(fold / "x_train_fold_1.jsonl")
    return fold.parent


def _with_network(ws: Workspace, extra: dict[str, Any]) -> Path:
    checkpoint = torch.load(ws.checkpoint, weights_only=True)
    checkpoint["network"] = {**checkpoint["network"], **extra}
    path = ws.tmp / "odd.pt"
    torch.save(checkpoint, path)
    return path


def test_the_table_has_at_least_100_cases() -> None:
    assert len(CASES) >= 100
    assert len({(c.category, c.name) for c in CASES}) == len(CASES), "case names must be distinct"


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_hostile(case: Case, ws: Workspace, monkeypatch) -> None:
    monkeypatch.chdir(ws.tmp)
    check_case(case, ws)


def test_verify_names_index_rows_out_of_range_and_finishes(ws: Workspace) -> None:
    _damage_index(ws.zarr, {4: (10**12, 50)})
    result = invoke(["verify", ws.zarr])
    assert result.exit_code == 1
    assert "u04: entry (1000000000000, 50) outside the" in result.output

"""The command line, end to end on generated corpora: prepare, extract, info, verify, demo."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from featurestore import open_store
from featurestore.store.base import BACKENDS, SUFFIXES
from featurestore.synthetic import make_iemocap

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict | None = None, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def iemocap_root(tmp_path_factory) -> Path:
    return make_iemocap(tmp_path_factory.mktemp("iemocap"), sessions=2, utts_per_dialog=4)


def test_prepare_writes_manifest_and_prints_counts(tmp_path, iemocap_root) -> None:
    out = tmp_path / "m.csv"
    result = run("prepare", "--corpus", "iemocap", "--root", iemocap_root, "--out", out)
    assert "16 utterances" in result.output
    assert "emotion: angry 4, happy 4, neutral 4, sad 4" in result.output
    assert "expression: acted 8, spontaneous 8" in result.output
    assert "1 audio file(s) without a label" in result.output
    assert "speaker: Ses01F" in result.output
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16 and rows[0]["utt_id"].startswith("iemocap-Ses01")


def test_extract_with_env_root_exactly_as_documented(tmp_path, iemocap_root, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"SERMTL_IEMOCAP_ROOT": str(iemocap_root)}
    first = run("extract", "--corpus", "iemocap", "--feature", "mfcc", env=env)
    assert "16 stored, 0 already there, 0 skipped" in first.output
    store = open_store(tmp_path / "cache" / "iemocap_mfcc.zarr")
    assert len(store) == 16 and store.read(store.ids()[0]).shape[1] == 40
    second = run("extract", "--corpus", "iemocap", "--feature", "mfcc", env=env)
    assert "0 stored, 16 already there" in second.output


@pytest.mark.parametrize("fmt,suffix", [(fmt, next(s for s, f in SUFFIXES.items() if f == fmt)) for fmt in BACKENDS])
def test_manifest_extract_info_verify(tmp_path, csv_corpus, fmt, suffix) -> None:
    store = tmp_path / f"feats{suffix}"
    run("extract", "--manifest", csv_corpus, "--feature", "mfcc", "--store", store, "--format", fmt, "--max-batch", "3")
    text = run("info", store).output
    assert f"({fmt}," in text and "12 of 12 manifest rows" in text and "1 layer(s) x 40 dims, float32" in text
    assert "emotion   angry 3, happy 3, neutral 3, sad 3" in text
    summary = json.loads(run("info", store, "--json").output)
    assert summary["utterances"] == 12 and summary["dim"] == 40
    assert summary["config"]["feature"]["hop_length"] == 160 and summary["size_bytes"] > 0
    assert "0 problem(s), 0 missing" in run("verify", store).output


def test_verify_fails_on_missing_and_lists_skipped(tmp_path, csv_corpus) -> None:
    rows = list(csv.DictReader(open(csv_corpus)))
    Path(csv_corpus.parent / rows[2]["path"]).write_bytes(b"RIFF0000WAVE")  # truncated header
    store = tmp_path / "s.zarr"
    failed = run("extract", "--manifest", csv_corpus, "--feature", "mfcc", "--store", store, ok=False)
    assert failed.exit_code == 1
    line = failed.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and "utt 02.wav" in line
    skipped = run("extract", "--manifest", csv_corpus, "--feature", "mfcc", "--store", store, "--on-error", "skip")
    assert "1 skipped" in skipped.output
    assert "skipped   u02:" in run("info", store).output
    verify = run("verify", store, ok=False)
    assert verify.exit_code == 1 and "missing: u02" in verify.output and "skipped: u02" in verify.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["prepare", "--corpus", "nope", "--root", "."], "'nope' is not one of 'baum1', 'csv'"),
        (["prepare", "--corpus", "iemocap", "--root", "/does/not/exist"], "/does/not/exist"),
        (["extract", "--corpus", "emodb", "--feature", "mfcc"], "pass --root DIR or set SERMTL_EMODB_ROOT"),
        (["extract", "--feature", "mfcc"], "--corpus NAME"),
        (["info", "/nowhere.zarr"], "store not found: /nowhere.zarr"),
        (["extract", "--manifest", "missing.csv", "--feature", "mfcc"], "manifest not found: missing.csv"),
        (["prepare", "--corpus", "urdu", "--root", ".", "--option", "bogus"], "--option expects KEY=VALUE"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, needle) -> None:
    result = run(*args, ok=False, env={"SERMTL_EMODB_ROOT": ""})
    assert result.exit_code != 0
    assert needle in result.output and len(result.output.strip().splitlines()) == 1


def test_manifest_missing_column(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("utt_id,path,emotion\na,a.wav,sad\n")
    result = run("extract", "--manifest", bad, "--feature", "mfcc", ok=False)
    assert result.exit_code == 1 and "missing required column(s) speaker" in result.output


def test_refuses_other_config_and_keeps_store(tmp_path, csv_corpus) -> None:
    store = tmp_path / "s.zarr"
    run("extract", "--manifest", csv_corpus, "--feature", "mfcc", "--store", store)
    before = open_store(store).read("u01")
    result = run(
        "extract", "--manifest", csv_corpus, "--feature", "mfcc", "--store", store, "--dtype", "float16", ok=False
    )
    assert result.exit_code == 1 and "another feature config" in result.output
    np.testing.assert_array_equal(open_store(store).read("u01"), before)


def test_w2v2_extract_on_a_local_tiny_model(tmp_path, csv_corpus) -> None:
    from featurestore.features.random_models import save_random_ssl_model

    model = save_random_ssl_model(tmp_path / "tiny", size="tiny")
    store = tmp_path / "w.zarr"
    run(
        "extract",
        "--manifest",
        csv_corpus,
        "--feature",
        "w2v2",
        "--model",
        model,
        "--layers",
        "0,2",
        "--store",
        store,
        "--device",
        "cpu",
    )
    opened = open_store(store)
    assert opened.attrs["dtype"] == "float16" and opened.attrs["feature"]["layers"] == [0, 2]
    features = opened.read("u05")
    assert features.shape[0] == 2 and features.shape[2] == 32 and features.dtype == np.float16
    bad = run(
        "extract",
        "--manifest",
        csv_corpus,
        "--feature",
        "w2v2",
        "--model",
        model,
        "--layers",
        "7",
        "--store",
        tmp_path / "x.zarr",
        ok=False,
    )
    assert bad.exit_code == 1 and "--layers" in bad.output


def test_console_script_and_python_cli_py(tmp_path) -> None:
    by_file = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert by_file.returncode == 0 and "extract" in by_file.stdout and "verify" in by_file.stdout
    script = Path(sys.executable).with_name("sermtl")
    if script.exists():
        version = subprocess.run([str(script), "--version"], capture_output=True, text=True)
        assert version.returncode == 0 and version.stdout.startswith("sermtl ")


def test_demo_runs_end_to_end_and_reuses_its_work(tmp_path) -> None:
    out = tmp_path / "demo"
    result = run("demo", "--out", out)
    assert "demo done" in result.output and "ERA" in result.output
    summary = json.loads((out / "demo.json").read_text())
    assert all(store["verified"] for store in summary["stores"].values())
    for run_name in ("mfcc-nomtl", "mfcc-mtl", "w2v2-nomtl", "w2v2-mtl"):
        results = json.loads((out / "runs" / run_name / "results.json").read_text())
        assert len(results["folds"]) == 5 and results["uwa"] == summary["runs"][run_name]["uwa"]
    assert summary["runs"]["mfcc-nomtl"]["uwa"] > 60.0  # the demo corpus is learnable
    report = (out / "report" / "report.md").read_text()
    assert "tiny wav2vec2 with random weights" in report
    assert f"{summary['runs']['mfcc-mtl']['uwa']:.2f}" in report
    pngs = list((out / "report" / "figures").glob("*.png"))
    assert len(pngs) >= 2 and all(f"figures/{p.name}" in report for p in pngs)
    again = run("demo", "--out", out)
    assert again.output.count("already extracted") == 2
    assert json.loads((out / "demo.json").read_text())["runs"] == summary["runs"]

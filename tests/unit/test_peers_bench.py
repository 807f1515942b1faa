"""The peer benchmarks run at CI size: ``bench/peers.py --quick`` times whole processes of
sermtl and its peers on one generated corpus, ``bench/opensmile_workers.py --quick`` one
openSMILE process against two (figures in docs/performance.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench import peers


def test_peers_quick_times_every_installed_tool_as_a_whole_process(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    result = peers.main(["--quick", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = result["rows"]
    assert {"import torch", "sermtl mfcc", "sermtl fbank"} <= set(rows)
    expected = {"lhotse mfcc", "lhotse fbank"} if importlib.util.find_spec("lilcom") else set()
    if importlib.util.find_spec("kaldi_native_fbank"):
        expected.add("kaldi-native-fbank loop")
    assert expected <= set(rows)
    for row in rows.values():
        assert row["wall_s"] > 0 and row["peak_rss_mib"] > 10
    assert result["utterances"] == 40 and result["audio_s"] > 40
    assert set(result["memory_over_import_torch"]) == set(rows) - {"import torch"}
    for name, ratio in result["speedup"].items():
        assert ratio is None or ratio > 0, name


def test_opensmile_workers_quick_gives_identical_features(tmp_path: Path) -> None:
    pytest.importorskip("opensmile")
    from bench import opensmile_workers

    out = tmp_path / "workers.json"
    result = opensmile_workers.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["settings"]["utterances"] == 12
    assert [row["feature"] for row in result["features"]] == list(opensmile_workers.FEATURES)
    assert all(row["identical"] is True and row["speedup"] > 0 for row in result["features"])

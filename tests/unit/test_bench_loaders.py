"""The streaming and batching benchmarks' code paths at toy size (``--tiny``): every figure
is there, finite and positive; no timing is asserted."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from bench import batching, streaming


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_streaming_bench_times_every_bank_in_both_formats(tmp_path, capsys) -> None:
    out = streaming.main(
        ["--tiny", "--channels", "8", "--step-ms", "1", "--workdir", str(tmp_path), "--json", str(tmp_path / "s.json")]
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out["summary"]
    assert json.loads((tmp_path / "s.json").read_text())["summary"] == out["summary"]
    assert len(out["summary"]) == 18 and all(_positive_finite(v) for v in out["summary"].values())
    for fmt in ("zarr", "hdf5"):
        assert _positive_finite(out[fmt]["loader"]["streaming_before_batches_per_s"])
        assert out[fmt]["reads"]["reads_per_batch"] >= 1


def test_the_bench_streaming_bank_before_gives_the_same_batches(tmp_path) -> None:
    from featurestore.store import open_store
    from trainer.data import FeatureBank, make_batches

    streaming.write_store(tmp_path / "s.zarr", 20, 16)
    with open_store(tmp_path / "s.zarr") as store:
        ids = store.ids()
        batches = make_batches(ids, np.minimum(FeatureBank(store).lengths(ids), 40), 4, np.random.default_rng(0))
        a = list(FeatureBank(store).iterate(batches, 40, np.random.default_rng(1)))
        b = list(streaming.StreamingBankBefore(store).iterate(batches, 40, np.random.default_rng(1)))
    assert len(a) == len(b) == len(batches)
    assert all(torch.equal(x[1], y[1]) and torch.equal(x[2], y[2]) for x, y in zip(a, b))


def test_batching_bench_reports_padding_and_step_times(tmp_path, capsys) -> None:
    out = batching.main(["--tiny", "--workdir", str(tmp_path), "--json", str(tmp_path / "b.json")])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out["summary"]
    assert set(out["padding"]) == {"bucketed", "random"} and out["padding"]["bucketed"] <= out["padding"]["random"]
    for mode in ("bucketed", "random"):
        assert _positive_finite(out["training"][mode]["step_s"]) and out["training"][mode]["frames_computed"] > 0
    assert _positive_finite(out["training"]["random_vs_bucketed"])

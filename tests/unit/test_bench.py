"""The benchmarks' code paths at toy size: generated corpora, real stores, real training.

No timing is asserted: only that every figure is there, finite and positive, and that
what the benchmarks build (corpus, batches, on-the-fly features) is what they claim.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench import common, extraction, gpu, report, run, training

REQUIRED = (
    "mfcc_x_realtime",
    "w2v2_batched_vs_sequential",
    "cache_vs_onthefly_mfcc",
    "cache_vs_onthefly_w2v2",
    "store_read_utts_per_s_zarr",
    "store_read_utts_per_s_hdf5",
)


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_run_prints_all_figures_as_the_last_json_line(tmp_path, capsys) -> None:
    out = run.main(["--tiny", "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "all.json")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(out))
    for key in (
        *REQUIRED,
        "store_read_GB_per_s_zarr",
        "store_read_GB_per_s_hdf5",
        "loader_fraction_c512",
        "mfcc_batched_vs_sequential",
        "w2v2_bucketed_vs_naive",
        "scale_extract_time_per_utt_ratio",
        "mfcc_compute_only_x_realtime",
        "sweep_ratio",
    ):
        assert _positive_finite(out[key]), key
    for key in ("cpu_epoch_s_c512", "cpu_epoch_s_c128"):  # a difference of two timings: at toy size, noise
        assert isinstance(out[key], float) and math.isfinite(out[key]), key
    assert out["w2v2_batched_max_abs_diff"] < 1e-2  # float16 storage rounding only: batching is exact
    assert out["scale_factors"] == [1, 4, 16] and all(_positive_finite(s) for s in out["scale_extract_s"])
    sections = json.loads((tmp_path / "all.json").read_text())
    assert sections["summary"] == out
    rows = report.table(out).splitlines()[2:]
    assert len(rows) == len(report.ROWS) and all(row.count("|") == 5 for row in rows)
    assert [row["utterances"] for row in sections["scale"]["rows"]] == [12, 48, 192]


def test_gpu_benchmark_skips_without_cuda_and_runs_its_code_on_cpu_at_toy_size(tmp_path, capsys) -> None:
    import torch

    if not torch.cuda.is_available():
        skipped = gpu.main([])
        assert "skipped" in skipped and json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == skipped
    out = gpu.main(["--device", "cpu", "--tiny", "--workdir", str(tmp_path), "--part", "extract"])
    assert _positive_finite(out["w2v2"]["bucketed_x_realtime"]) and "training" not in out
    assert out["longest_alone"]["seconds_of_audio"] == 2.0 and isinstance(out["target_extract_500x"], bool)
    out = gpu.main(["--device", "cpu", "--tiny", "--workdir", str(tmp_path), "--part", "train"])
    assert _positive_finite(out["training"]["total_s"]) and isinstance(out["target_train_under_3_min"], bool)
    assert out["training"]["folds"] == 5 and len(out["training"]["per_fold"]) == 5
    together = out["folds_together"]
    assert _positive_finite(together["together_vs_one_after_another"]) and together["ranks"] == 2
    for name in ("one_after_another", "together"):
        results = json.loads((tmp_path / f"cv_{name}" / "results.json").read_text())
        assert len(results["folds"]) == 5


def test_corpus_has_iemocap_lengths_labels_and_its_longest_utterance(tmp_path) -> None:
    import soundfile as sf

    manifest = common.make_corpus(tmp_path, 20, longest=6.0)
    durations = [float(r["duration"]) for r in manifest]
    assert durations[0] == 6.0 and max(durations) == 6.0 and min(durations) >= 0.6
    for row in list(manifest)[:3]:
        assert sf.info(row["path"]).frames == round(float(row["duration"]) * 16000)
    assert set(manifest.column("emotion")) == set(common.EMOTIONS)
    assert len(set(manifest.column("session"))) == 5
    copies = common.repeat_manifest(manifest, 3)
    assert len(copies) == 60 and copies.total_duration() == pytest.approx(3 * manifest.total_duration())


def test_naive_batches_keep_the_bucketed_sizes_in_another_order(tmp_path) -> None:
    manifest = common.random_manifest(np.array([50, 400, 120, 90, 300, 60]))
    naive = extraction.naive_batches(manifest, batch_seconds=10.0)
    bucketed = extraction.plan_batches({r["utt_id"]: float(r["duration"]) for r in manifest}, 10.0)
    assert [len(b) for b in naive] == [len(b) for b in bucketed]
    assert sorted(u for b in naive for u in b) == sorted(manifest.ids())
    assert extraction.padded_seconds(manifest, naive) >= extraction.padded_seconds(manifest, bucketed)


def test_loader_clock_counts_each_batch_once_however_often_it_is_set(iemocap_mfcc_store) -> None:
    from featurestore.store import open_store
    from trainer.data import open_bank

    with open_store(iemocap_mfcc_store) as store:
        bank = training.clock_loader(training.clock_loader(open_bank(store)))
        batches = [store.ids()[:8], store.ids()[8:16]]
        assert [len(ids) for ids, _, _ in bank.iterate(batches)] == [8, 8]
        assert bank.loader_batches == 2 and bank.loader_s > 0
        training.clock_loader(bank)
        assert (bank.loader_batches, bank.loader_s) == (0, 0.0)


def test_on_the_fly_bank_recomputes_the_stored_features(tmp_path) -> None:
    from featurestore.features.mfcc import MFCCExtractor
    from featurestore.pipeline import extract_to_store
    from featurestore.store import open_store
    from trainer.data import open_bank

    manifest = common.make_corpus(tmp_path / "corpus", 6, longest=2.0)
    mfcc = MFCCExtractor(device="cpu")
    extract_to_store(manifest, mfcc, tmp_path / "mfcc.zarr", progress=False)
    with open_store(tmp_path / "mfcc.zarr") as store:
        cached = open_bank(store)
        ids = store.ids()
        onthefly = training.OnTheFlyBank(store, mfcc, cached.statistics(ids))
        whole = [(0, n) for n in cached.lengths(ids)]
        x_cache, len_cache = cached.gather(ids, whole)
        x_fly, len_fly = onthefly.gather(ids, whole)
        assert len_fly.tolist() == len_cache.tolist()
        np.testing.assert_allclose(x_fly.numpy(), x_cache.numpy(), atol=1e-3)
        crop = [(10, 50)] * len(ids)  # a crop recomputed from its audio has the crop's frame count
        x_crop, lengths = onthefly.gather(ids, crop)
        assert x_crop.shape == (len(ids), 50, 40) and lengths.tolist() == [50] * len(ids)


def test_a_kept_workdir_is_extracted_again_not_resumed(tmp_path) -> None:
    from featurestore import open_store
    from featurestore.features.mfcc import MFCCExtractor
    from featurestore.pipeline import extract_to_store

    manifest = common.make_corpus(tmp_path / "corpus", 4, longest=2.0)
    store = tmp_path / "s.zarr"
    extract_to_store(manifest, MFCCExtractor(), store, progress=False)
    assert len(open_store(store)) == 4 and (tmp_path / "s.zarr.lock").exists()
    assert common.fresh_store(store) == store and not store.exists() and not (tmp_path / "s.zarr.lock").exists()
    report = extract_to_store(manifest, MFCCExtractor(), common.fresh_store(store), progress=False)
    assert (report.stored, report.already_done) == (4, 0)

"""Stores in both backends: round trips, resume, interrupted runs, refused configs, verify."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from featurestore import open_store
from featurestore.corpora import CORPORA
from featurestore.errors import AudioError, StoreError
from featurestore.features.mfcc import MFCCExtractor
from featurestore.manifest import Manifest
from featurestore.pipeline import extract_to_store, plan_batches
from featurestore.store import StoreWriter
from featurestore.verify import store_summary, verify_store

SUFFIXES = [".zarr", ".h5"]


@pytest.fixture
def mfcc() -> MFCCExtractor:
    return MFCCExtractor(device="cpu")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_matches_direct_extraction(tmp_path, manifest, mfcc, suffix) -> None:
    path = tmp_path / f"s{suffix}"
    report = extract_to_store(manifest, mfcc, path, batch_seconds=3.0, progress=False)
    assert report.stored == len(manifest) == 12 and not report.skipped
    store = open_store(path)
    assert len(store) == 12 and store.ids() == manifest.ids()
    assert store.manifest["u03"]["take"] == "3" and store.manifest["u03"]["emotion"] == "sad"
    assert store.attrs["feature"]["feature"] == "mfcc" and store.attrs["dtype"] == "float32"
    assert store.format == ("zarr" if suffix == ".zarr" else "hdf5")
    from featurestore.audio import load_audio

    for utt_id in manifest.ids():
        direct = mfcc.extract_batch([load_audio(manifest[utt_id]["path"])])[0][0]
        stored = store.read(utt_id)
        assert stored.shape == direct.shape and stored.shape[1] == 40
        np.testing.assert_allclose(stored, direct, atol=1e-4)
        assert abs(stored.shape[0] - manifest[utt_id]["duration"] * 100) <= 2
    block, entries = store.read_all()
    offset, frames = entries["u05"]
    np.testing.assert_array_equal(block[offset : offset + frames], store.read("u05"))
    assert verify_store(path).ok


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_multi_layer_store_reads_layers(tmp_path, suffix) -> None:
    rows = Manifest([{"utt_id": f"x{i}", "path": f"/a/x{i}.wav", "emotion": "sad", "speaker": "s"} for i in range(3)])
    path = tmp_path / f"m{suffix}"
    data = {f"x{i}": np.random.default_rng(i).standard_normal((3, 5 + i, 4)).astype(np.float32) for i in range(3)}
    with StoreWriter(path, rows, {"feature": "toy"}, "float16", dim=4, num_layers=3, frame_rate=50.0) as writer:
        writer.write(list(data.items()))
    store = open_store(path)
    for utt_id, array in data.items():
        assert store.read(utt_id).shape == array.shape
        np.testing.assert_allclose(store.read(utt_id), array.astype(np.float16))
        np.testing.assert_allclose(store.read(utt_id, layer=2), array[2].astype(np.float16))
    assert store.read_all(layer=1)[0].shape == (5 + 6 + 7, 4)


def test_second_run_skips_everything(tmp_path, manifest, mfcc) -> None:
    path = tmp_path / "s.zarr"
    first = extract_to_store(manifest, mfcc, path, progress=False)
    second = extract_to_store(manifest, mfcc, path, progress=False)
    assert second.stored == 0 and second.already_done == 12
    assert second.elapsed < first.elapsed


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_crash_between_data_and_index_then_resume(tmp_path, manifest, mfcc, monkeypatch, suffix) -> None:
    clean = tmp_path / f"clean{suffix}"
    extract_to_store(manifest, mfcc, clean, batch_seconds=3.0, progress=False)
    path = tmp_path / f"crashed{suffix}"
    calls = {"n": 0}
    real_write = StoreWriter.write

    def write_then_die(self, items, *audio):
        calls["n"] += 1
        if calls["n"] == 3:  # frames of batch 3 reach the disk, its index rows never do
            shape = self._features.shape
            self._features.resize((shape[0], self._end + 50, shape[2]))
            self._features[:, self._end : self._end + 50] = np.float32(7.0)
            raise KeyboardInterrupt
        return real_write(self, items, *audio)

    monkeypatch.setattr(StoreWriter, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        extract_to_store(manifest, mfcc, path, batch_seconds=3.0, progress=False)
    monkeypatch.setattr(StoreWriter, "write", real_write)

    interrupted = open_store(path)
    done = len(interrupted)
    assert 0 < done < 12
    result = verify_store(path)
    assert not result.ok and not result.problems and len(result.missing) == 12 - done
    interrupted.close()

    report = extract_to_store(manifest, mfcc, path, batch_seconds=3.0, progress=False)
    assert report.stored == 12 - done and report.already_done == done
    assert verify_store(path).ok
    resumed, reference = open_store(path), open_store(clean)
    for utt_id in manifest.ids():
        np.testing.assert_array_equal(resumed.read(utt_id), reference.read(utt_id))


def test_other_feature_config_is_refused_and_store_kept(tmp_path, manifest, mfcc) -> None:
    path = tmp_path / "s.zarr"
    extract_to_store(manifest, mfcc, path, progress=False)
    before = open_store(path).read("u01")
    with pytest.raises(StoreError, match=rf"{re.escape(str(path))} .*\bfeature\.n_mels: 64\b.*\b40\b"):
        extract_to_store(manifest, MFCCExtractor(device="cpu", n_mels=40), path, progress=False)
    with pytest.raises(StoreError, match=rf"{re.escape(str(path))} .*\bdtype: 'float32'.*'float16'"):
        extract_to_store(manifest, mfcc, path, dtype="float16", progress=False)
    np.testing.assert_array_equal(open_store(path).read("u01"), before)
    assert verify_store(path).ok


def test_appending_rows_and_changed_audio(tmp_path, manifest, mfcc) -> None:
    path = tmp_path / "s.zarr"
    first_half = manifest.subset(manifest.ids()[:6])
    extract_to_store(first_half, mfcc, path, progress=False)
    report = extract_to_store(manifest, mfcc, path, progress=False)
    assert report.stored == 6 and len(open_store(path)) == 12
    moved = manifest.to_records()
    moved[0]["path"] = moved[1]["path"]
    with pytest.raises(StoreError, match=rf"\bu00\b.*other audio.*{re.escape(str(path))}"):
        extract_to_store(Manifest(moved), mfcc, path, progress=False)


def test_second_writer_is_refused(tmp_path, manifest) -> None:
    path = tmp_path / "s.zarr"
    with StoreWriter(path, manifest, {"feature": "toy"}, "float32", dim=2, num_layers=1, frame_rate=100.0):
        with pytest.raises(StoreError, match=rf"{re.escape(str(path))} .*another process"):
            StoreWriter(path, manifest, {"feature": "toy"}, "float32", dim=2, num_layers=1, frame_rate=100.0)
    StoreWriter(path, manifest, {"feature": "toy"}, "float32", dim=2, num_layers=1, frame_rate=100.0).close()


def test_on_error_skip_lists_bad_items_and_fail_keeps_earlier_work(tmp_path, manifest, mfcc) -> None:
    rows = manifest.to_records()
    Path(rows[4]["path"]).write_bytes(b"")
    Path(rows[7]["path"]).write_text("not audio at all")
    bad = Manifest(rows)
    path = tmp_path / "s.zarr"
    with pytest.raises(AudioError, match=f"{re.escape(rows[4]['path'])}|{re.escape(rows[7]['path'])}"):
        extract_to_store(bad, mfcc, path, batch_seconds=2.0, progress=False)
    kept = len(open_store(path))
    report = extract_to_store(bad, mfcc, path, on_error="skip", batch_seconds=2.0, progress=False)
    assert {s["utt_id"] for s in report.skipped} == {"u04", "u07"}
    assert report.stored == 10 - kept
    store = open_store(path)
    assert len(store) == 10 and {s["utt_id"] for s in store.skipped()} == {"u04", "u07"}
    assert "empty audio file" in {s["utt_id"]: s["error"] for s in store.skipped()}["u04"]
    summary = store_summary(path)
    assert summary["missing"] == 2 and len(summary["skipped"]) == 2
    json.dumps(summary)
    assert set(verify_store(path).missing) == {"u04", "u07"}


def test_corrupted_values_are_found_by_verify(tmp_path, manifest, mfcc) -> None:
    path = tmp_path / "s.h5"
    extract_to_store(manifest, mfcc, path, progress=False)
    import h5py

    offset = int(h5py.File(path, "r")["index"][2, 0])
    with h5py.File(path, "r+") as handle:
        handle["features"][0, offset + 1, 3] = np.nan
    result = verify_store(path)
    assert not result.ok and result.problems == ["u02: NaN or infinite values"]


def test_not_a_store(tmp_path) -> None:
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(StoreError, match=rf"not a feature store\b.*{re.escape(str(tmp_path / 'x.zarr'))}"):
        open_store(tmp_path / "x.zarr")
    with pytest.raises(StoreError, match=rf"not found\b.*{re.escape(str(tmp_path / 'nothing.h5'))}"):
        open_store(tmp_path / "nothing.h5")


def test_plan_batches_respects_limits() -> None:
    durations = {f"u{i}": d for i, d in enumerate([5.0, 1.0, 34.0, 2.0, 2.0, 0.5, 3.0])}
    batches = plan_batches(durations, batch_seconds=8.0)
    assert sorted(u for b in batches for u in b) == sorted(durations)
    assert batches[0] == ["u2"]  # longer than the budget: alone, and first
    for batch in batches[1:]:
        assert len(batch) * max(durations[u] for u in batch) <= 8.0
    assert all(len(b) == 1 for b in plan_batches(durations, 100.0, max_batch=1))


#: Recipes that import another tool's files (tested with those files in tests/hostile/test_importers.py
#: and tests/cli/): every other recipe has a generated layout in featurestore/synthetic.py.
IMPORTERS = {"emobox", "hf", "lhotse"}


def test_every_recipe_but_the_importers_has_a_generated_layout() -> None:
    from featurestore import synthetic

    assert {name for name in CORPORA if not hasattr(synthetic, f"make_{name}")} == IMPORTERS


@pytest.mark.parametrize(
    "corpus", [name for name in sorted(__import__("featurestore.corpora").corpora.CORPORA) if name not in IMPORTERS]
)
def test_every_recipe_extracts_into_a_verified_store(tmp_path, corpus) -> None:
    import warnings

    from featurestore import synthetic
    from featurestore.corpora import prepare

    root = getattr(synthetic, f"make_{corpus}")(tmp_path / "corpus")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixtures' deliberate quirks
        manifest = prepare(corpus, root, **({"on_duplicate": "skip"} if corpus == "ravdess" else {}))
    path = tmp_path / "s.zarr"
    report = extract_to_store(manifest, MFCCExtractor(device="cpu"), path, progress=False)
    assert report.stored == len(manifest) > 0
    result = verify_store(path)
    # make_csv declares u4 as 0.25 s long while its file lasts longer: verify must say so
    wrong_duration = ["u4"] if corpus == "csv" else []
    assert [p.split(":")[0] for p in result.problems] == wrong_duration, result.problems
    assert not result.missing
    store = open_store(path)
    for utt_id in store.ids():
        if utt_id not in wrong_duration:
            assert abs(store.num_frames(utt_id) - store.manifest[utt_id]["duration"] * 100) <= 2


def test_merge_copies_selected_rows_without_recomputing(tmp_path, manifest, mfcc) -> None:
    from featurestore.store.merge import merge_stores, where

    first_half, second_half = manifest.subset(manifest.ids()[:6]), manifest.subset(manifest.ids()[6:])
    extract_to_store(first_half, mfcc, tmp_path / "a.zarr", progress=False)
    extract_to_store(second_half, mfcc, tmp_path / "b.h5", progress=False)
    out = merge_stores(
        [(tmp_path / "a.zarr", where(expression="acted")), (tmp_path / "b.h5", None)], tmp_path / "m.zarr"
    )
    merged, a, b = open_store(out), open_store(tmp_path / "a.zarr"), open_store(tmp_path / "b.h5")
    acted = [u for u in a.ids() if a.manifest[u]["expression"] == "acted"]
    assert merged.ids() == acted + b.ids()
    for utt_id in acted:
        np.testing.assert_array_equal(merged.read(utt_id), a.read(utt_id))
    assert merged.attrs["fingerprint"] == a.attrs["fingerprint"] and verify_store(out).ok
    extract_to_store(
        manifest.subset(["u00"]), MFCCExtractor(device="cpu", n_mels=40), tmp_path / "other.zarr", progress=False
    )
    with pytest.raises(
        StoreError,
        match=rf"{re.escape(str(tmp_path / 'other.zarr'))} and {re.escape(str(tmp_path / 'a.zarr'))} .*different features",
    ):
        merge_stores([(tmp_path / "a.zarr", None), (tmp_path / "other.zarr", None)], tmp_path / "x.zarr")

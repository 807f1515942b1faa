"""Feature fusion (``--store A --store B``): frame-level stores joined frame by frame,
utterance-level stores joined to the pooled statistics; misaligned stores refused in one
line; the same results as one store of the hand-joined frames; predict rebuilds the fusion."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from featurestore import open_store
from featurestore.errors import ConfigError
from featurestore.features.fbank import FbankExtractor
from featurestore.manifest import Manifest
from featurestore.pipeline import extract_to_store
from featurestore.store.fusion import FRAME_TOLERANCE, FusedStore, open_stores, store_name
from featurestore.store.writer import StoreWriter
from trainer.checkpoint import load_checkpoint
from trainer.config import TrainConfig
from trainer.cv import run_cv
from trainer.data import StreamingBank, open_bank
from trainer.predict import Predictor

TINY = {"epochs": 2, "channels": 16, "embedding_dim": 8, "batch_size": 8, "device": "cpu", "aux": "none"}


@pytest.fixture(scope="module")
def fbank_store(iemocap_mfcc_store, tmp_path_factory) -> Path:
    """An fbank store of the same utterances as ``iemocap_mfcc_store``."""
    path = tmp_path_factory.mktemp("fusion") / "iemocap_fbank.zarr"
    extract_to_store(open_store(iemocap_mfcc_store).full_manifest, FbankExtractor(device="cpu"), path, progress=False)
    return path


def _toy_store(path: Path, manifest: Manifest, arrays: dict[str, np.ndarray], frame_rate: float) -> Path:
    """A store holding ``arrays`` (``{utt_id: (frames, dim)}``) for ``manifest``'s rows."""
    dim = next(iter(arrays.values())).shape[1]
    with StoreWriter(path, manifest, {"feature": "toy"}, "float32", dim=dim, num_layers=1, frame_rate=frame_rate) as w:
        w.write([(u, a[None]) for u, a in arrays.items()])
    return path


def _fold_1_checkpoint(stores, out: Path) -> Path:
    """Train fold 1 of ``stores`` (one path or several, fused) at the tiny config; its checkpoint."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_cv(stores, out, TrainConfig.from_dict(TINY), only_folds=[1], progress=False)
    return out / "fold_1" / "checkpoint.pt"


def test_the_fused_frames_are_the_parts_side_by_side(iemocap_mfcc_store, fbank_store) -> None:
    mfcc, fbank = open_store(iemocap_mfcc_store), open_store(fbank_store)
    with open_stores([iemocap_mfcc_store, fbank_store]) as fused:
        assert isinstance(fused, FusedStore) and fused.dim == 40 + 80 and fused.ids() == mfcc.ids()
        block, entries = fused.read_all()
        for utt_id in fused.ids()[:5]:
            frames = min(mfcc.num_frames(utt_id), fbank.num_frames(utt_id))
            assert abs(mfcc.num_frames(utt_id) - fbank.num_frames(utt_id)) <= FRAME_TOLERANCE
            offset, count = entries[utt_id]
            assert count == frames
            expected = np.concatenate([mfcc.read(utt_id)[:frames], fbank.read(utt_id)[:frames]], axis=1)
            np.testing.assert_array_equal(block[offset : offset + count], expected)
            np.testing.assert_array_equal(fused.read(utt_id), expected)
        # ranges across utterances, as the streaming bank reads them
        np.testing.assert_array_equal(fused.read_frames(0, 37, 911), block[37:911])
        assert fused.attrs["feature"]["feature"] == "fusion" and fused.attrs["utterance_dim"] == 0
    assert store_name([iemocap_mfcc_store, fbank_store]) == "iemocap_mfcc+iemocap_fbank"


def test_misaligned_stores_are_refused_in_one_line(iemocap_mfcc_store, tmp_path) -> None:
    mfcc = open_store(iemocap_mfcc_store)
    manifest, ids = mfcc.full_manifest, mfcc.ids()
    frames = {u: np.zeros((mfcc.num_frames(u), 3), np.float32) for u in ids}
    fewer = _toy_store(tmp_path / "fewer.zarr", manifest.subset(ids[:-2]), {u: frames[u] for u in ids[:-2]}, 100.0)
    with pytest.raises(
        ConfigError, match=rf"^--store: .*fewer.zarr lacks 2 of the 60 utterances .*\(first: {ids[-2]}\)"
    ):
        open_stores([iemocap_mfcc_store, fewer])
    longer = {u: np.zeros((len(f) + FRAME_TOLERANCE + 1, 3), np.float32) for u, f in frames.items()}
    longer_path = _toy_store(tmp_path / "longer.zarr", manifest, longer, 100.0)
    with pytest.raises(
        ConfigError, match=rf"^--store: {ids[0]} has \d+ frames in .*longer.zarr and \d+ in .*(more than 2 apart)"
    ):
        open_stores([iemocap_mfcc_store, longer_path])
    slower = _toy_store(tmp_path / "slower.zarr", manifest, frames, 50.0)
    with pytest.raises(ConfigError, match=r"frame-level fusion needs one frame grid"):
        open_stores([iemocap_mfcc_store, slower])
    rows = [dict(manifest[u]) for u in manifest.ids()]
    rows[0]["emotion"] = "sad" if rows[0]["emotion"] != "sad" else "happy"
    relabelled = _toy_store(tmp_path / "relabelled.zarr", Manifest(rows), frames, 100.0)
    with pytest.raises(ConfigError, match=rf"^--store: {rows[0]['utt_id']} has emotion .* fuse stores of one manifest"):
        open_stores([iemocap_mfcc_store, relabelled])
    with pytest.raises(ConfigError, match="names a store twice"):
        open_stores([iemocap_mfcc_store, iemocap_mfcc_store])
    # within the tolerance, the longer part is cut
    within = {u: np.ones((len(f) + FRAME_TOLERANCE, 3), np.float32) for u, f in frames.items()}
    with open_stores([iemocap_mfcc_store, _toy_store(tmp_path / "within.zarr", manifest, within, 100.0)]) as fused:
        assert fused.num_frames(ids[0]) == mfcc.num_frames(ids[0])


def test_fusion_trains_exactly_as_a_hand_joined_store(iemocap_mfcc_store, fbank_store, tmp_path) -> None:
    with open_stores([iemocap_mfcc_store, fbank_store]) as fused:
        block, entries = fused.read_all()
        joined = {u: block[o : o + n] for u, (o, n) in entries.items()}
        rate = fused.attrs["frame_rate"]
        by_hand = _toy_store(tmp_path / "by_hand.zarr", open_store(iemocap_mfcc_store).full_manifest, joined, rate)
    config = TrainConfig.from_dict(TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused_results = run_cv([iemocap_mfcc_store, fbank_store], tmp_path / "fused", config, progress=False)
        hand_results = run_cv(by_hand, tmp_path / "hand", config, progress=False)
    for key in ("wa", "uwa", "per_class_recall"):
        assert fused_results[key] == hand_results[key]
    assert (tmp_path / "fused/fold_1/predictions.csv").read_text() == (
        tmp_path / "hand/fold_1/predictions.csv"
    ).read_text()
    saved = json.loads((tmp_path / "fused/config.json").read_text())
    assert saved["store"] == [str(Path(iemocap_mfcc_store).resolve()), str(Path(fbank_store).resolve())]
    # resuming the same fusion is the same run; a store swapped for another is refused
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            run_cv([iemocap_mfcc_store, fbank_store], tmp_path / "fused", config, progress=False)["uwa"]
            == fused_results["uwa"]
        )


def test_predict_rebuilds_the_fusion(iemocap_mfcc_store, fbank_store, tmp_path) -> None:
    path = _fold_1_checkpoint([iemocap_mfcc_store, fbank_store], tmp_path / "run")
    checkpoint = load_checkpoint(path)
    assert checkpoint["network"]["input_size"] == 120
    predictor = Predictor.load(path)
    import soundfile

    with open_stores([iemocap_mfcc_store, fbank_store]) as fused:
        utt_id = fused.ids()[3]
        wave, rate = soundfile.read(fused.manifest[utt_id]["path"], dtype="float32")
        features = predictor.features([wave], rate)[0]
        stored = fused.read(utt_id)
    assert features.shape == stored.shape
    np.testing.assert_allclose(features, stored, atol=1e-3 * np.abs(stored).max())
    assert predictor.predict([wave], rate)[0]["emotion"] in checkpoint["emotions"]


def test_an_utterance_level_store_is_joined_to_the_pooled_statistics(iemocap_mfcc_store, tmp_path) -> None:
    mfcc = open_store(iemocap_mfcc_store)
    rng = np.random.default_rng(0)
    vectors = {u: rng.normal(size=(1, 6)).astype(np.float32) for u in mfcc.ids()}
    functionals = _toy_store(tmp_path / "functionals.zarr", mfcc.full_manifest, vectors, 0.0)
    # given first, the utterance-level part still comes last
    with open_stores([functionals, iemocap_mfcc_store]) as fused:
        assert fused.attrs["utterance_dim"] == 6 and fused.dim == 46
        utt_id = fused.ids()[7]
        row = fused.read(utt_id)
        np.testing.assert_array_equal(row[:, :40], mfcc.read(utt_id))
        np.testing.assert_array_equal(row[:, 40:], np.repeat(vectors[utt_id], len(row), axis=0))
        streaming = open_bank(fused, budget_bytes=0)
        assert isinstance(streaming, StreamingBank)
        x, _ = streaming.batch([utt_id])
        np.testing.assert_array_equal(x[0].numpy(), row)
        # in memory, the vectors are held once per utterance and joined to each read: the same batches
        in_memory = open_bank(fused)
        assert not in_memory.streaming and tuple(in_memory.frames.shape) == (fused.committed_frames, 40)
        batch_ids = fused.ids()[5:12]
        for bank in (in_memory, in_memory.speaker_normalised({"all": fused.ids()})):
            rng = np.random.default_rng(1)
            ours = bank.batch(batch_ids, crop_frames=50, rng=rng)
            rng = np.random.default_rng(1)
            view = streaming if bank is in_memory else streaming.speaker_normalised({"all": fused.ids()})
            theirs = view.batch(batch_ids, crop_frames=50, rng=rng)
            assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    path = _fold_1_checkpoint([iemocap_mfcc_store, functionals], tmp_path / "late")
    checkpoint = load_checkpoint(path)
    assert checkpoint["network"]["utterance_size"] == 6
    assert tuple(checkpoint["state_dict"]["encoder.fc.weight"].shape) == (8, 2 * 3 * 16 + 6)
    # the vector reaches the embedding: changing it changes the output
    from trainer.loop import load_network

    network = load_network(checkpoint)
    x = torch.from_numpy(row)[None]
    other = x.clone()
    other[..., 40:] += 1.0
    assert not torch.allclose(network(x)["embedding"], network(other)["embedding"])
    # an export takes the vector where the store view has it: the last values of every frame
    from trainer.export import export_model

    out = export_model(path, tmp_path / "late.pt", "torchscript")
    traced = torch.jit.load(str(out))
    lengths = torch.tensor([x.shape[1]])
    with torch.no_grad():
        exported = traced(x, lengths)[0]
        eager = torch.softmax(network(x, lengths)["emotion_logits"], dim=-1)
    torch.testing.assert_close(exported, eager, atol=1e-5, rtol=0)
    assert json.loads((tmp_path / "late.pt.json").read_text())["utterance_dims"] == 6
    assert "Features: `mfcc + toy`" in (tmp_path / "late.pt.md").read_text()


def test_a_crafted_fusion_in_a_checkpoint_is_one_line(iemocap_mfcc_store, fbank_store, tmp_path) -> None:
    from featurestore.errors import SermtlError

    checkpoint = load_checkpoint(_fold_1_checkpoint([iemocap_mfcc_store, fbank_store], tmp_path / "run"))
    parts = checkpoint["feature"]["parts"]
    crafted = {**checkpoint, "feature": {**checkpoint["feature"], "parts": [{**parts[0], "layer": 5}, parts[1]]}}
    with pytest.raises(ConfigError, match=r"^feature: a part takes layer 5 of mfcc, which has 1$"):
        Predictor([crafted])
    with pytest.raises(ConfigError, match=r"^feature: parts\[1\]\.dtype: expected one of float16, float32"):
        Predictor(
            [{**checkpoint, "feature": {**checkpoint["feature"], "parts": [parts[0], {**parts[1], "dtype": "int8"}]}}]
        )
    # an ensemble whose second member's network takes other features than its recorded fusion
    narrow = {
        **load_checkpoint(_fold_1_checkpoint(iemocap_mfcc_store, tmp_path / "mfcc")),
        "feature": checkpoint["feature"],
    }
    narrow["store_dtype"] = checkpoint.get("store_dtype")
    with pytest.raises(SermtlError, match=r"^ensemble \(member 2\): network\.input_size 40 does not fit its fusion"):
        Predictor([checkpoint, narrow], source="ensemble")
    pytest.importorskip("opensmile")
    from featurestore.features.opensmile_sets import EGeMAPSFunctionals

    functionals = {"feature": EGeMAPSFunctionals().describe(), "dtype": "float32", "layer": None}
    swapped = {**checkpoint, "feature": {**checkpoint["feature"], "parts": [parts[0], functionals]}}
    with pytest.raises(
        SermtlError, match=r"network\.utterance_size 0 does not fit its fusion features \(88 utterance-level"
    ):
        Predictor([swapped])


def test_fuse_finds_the_stores_of_other_features_beside_the_store(iemocap_mfcc_store, tmp_path) -> None:
    import shutil

    from tests.cli.test_cli import run
    from trainer.run_options import resolve_run

    store = tmp_path / "x_mfcc.zarr"
    shutil.copytree(iemocap_mfcc_store, store)
    sibling = tmp_path / "x_fbank.zarr"
    extract_to_store(open_store(store).full_manifest, FbankExtractor(device="cpu"), sibling, progress=False)
    assert resolve_run(str(store), None, {}, fuse=("fbank",)).store == (str(store), str(sibling))
    assert resolve_run(str(store), None, {}, fuse=("mfcc",)).store == (str(store),)  # its own feature
    with pytest.raises(
        ConfigError, match=rf"^--fuse egemaps: no store {tmp_path / 'x_egemaps.zarr'} beside .*extract it"
    ):
        resolve_run(str(store), None, {}, fuse=("egemaps",))
    preset = tmp_path / "fused.yaml"
    preset.write_text("fuse: [fbank]\nepochs: 1\n")
    assert resolve_run(str(store), str(preset), {}).store == (str(store), str(sibling))
    assert resolve_run(str(store), str(preset), {}, fuse=("none",)).store == str(store)
    assert resolve_run([str(store), str(sibling)], str(preset), {}).store == (str(store), str(sibling))
    with pytest.raises(ConfigError, match=r"^--fuse: give one --store"):
        resolve_run([str(store), str(sibling)], None, {}, fuse=("fbank",))
    renamed = tmp_path / "renamed.zarr"
    shutil.copytree(store, renamed)
    with pytest.raises(ConfigError, match=r"^--fuse: the name of .*renamed.zarr does not end in _mfcc"):
        resolve_run(str(renamed), None, {}, fuse=("fbank",))
    preset.write_text("fuse: [fbnak]\n")
    with pytest.raises(ConfigError, match=r"fused.yaml: 'fuse' must be a list of none, mfcc, fbank"):
        resolve_run(str(store), str(preset), {})
    out = tmp_path / "run"
    run(
        "train",
        "--store",
        store,
        "--fuse",
        "fbank",
        *"--epochs 1 --channels 8 --embedding-dim 8 --device cpu".split(),
        "--out",
        out,
    )
    assert json.loads((out / "config.json").read_text())["store"] == [str(store.resolve()), str(sibling.resolve())]


def test_sweep_and_a_deployable_model_on_a_fusion(iemocap_mfcc_store, fbank_store, tmp_path) -> None:
    from tests.cli.test_cli import run

    stores = ["--store", iemocap_mfcc_store, "--store", fbank_store]
    tiny = "--epochs 1 --channels 8 --embedding-dim 8 --device cpu --aux none".split()
    folds = "--protocol group-kfold --by speaker --folds 2".split()
    run("sweep", *stores, *folds, *tiny, "--grid", "lr=0.001,0.002", "--out", tmp_path / "sweep", "-q")
    grid = json.loads((tmp_path / "sweep/grid.json").read_text())
    assert grid["store"] == [str(Path(iemocap_mfcc_store).resolve()), str(Path(fbank_store).resolve())]
    run("train", "--all-data", *stores, *tiny, "--out", tmp_path / "model", "-q")
    checkpoint = load_checkpoint(tmp_path / "model/checkpoint.pt")
    assert checkpoint["feature"]["feature"] == "fusion" and checkpoint["network"]["input_size"] == 120
    card = (tmp_path / "model/MODEL_CARD.md").read_text()
    assert "on `mfcc + fbank` features" in card and "the fused stores" in card and "`, `" in card
    manifest = open_store(iemocap_mfcc_store).manifest
    wav = manifest[manifest.ids()[0]]["path"]
    printed = run("predict", "--checkpoint", tmp_path / "model", wav).output
    assert printed.startswith(wav) and any(f"{c}=" in printed for c in checkpoint["emotions"])

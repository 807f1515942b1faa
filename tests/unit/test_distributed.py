"""Scale-out on torch.distributed: `torchrun` with 2 gloo processes on CPU against one process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from featurestore.corpora import prepare
from featurestore.distributed import Group, deal_batches, extract_sharded, launched_by_torchrun, shard_dir
from featurestore.errors import StoreError
from featurestore.features.mfcc import MFCCExtractor
from featurestore.manifest import Manifest
from featurestore.pipeline import extract_to_store, plan_batches
from featurestore.store.merge import merge_stores
from featurestore.store.reader import open_store
from featurestore.store.writer import StoreWriter
from featurestore.store.zarr_store import ZarrBackend
from featurestore.verify import verify_store
from trainer.config import TrainConfig
from trainer.cv import Protocol, run_cv
from trainer.distributed import fold_share

REPO = Path(__file__).resolve().parents[2]
BATCH_SECONDS = "3"  # several batches from the 12 short utterances of `csv_corpus`


def torchrun(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 cli.py ARGS`` (a free port; one thread per rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(REPO / "cli.py"),
        *map(str, args),
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def extract_args(manifest: Path, store: Path) -> list[str | Path]:
    return [
        "extract",
        "--manifest",
        manifest,
        "--feature",
        "mfcc",
        "--store",
        store,
        "--batch-seconds",
        BATCH_SECONDS,
        "--device",
        "cpu",
    ]


def single_process_store(manifest: Path, path: Path) -> Path:
    extract_to_store(
        prepare("csv", manifest), MFCCExtractor(device="cpu"), path, batch_seconds=float(BATCH_SECONDS), progress=False
    )
    return path


def open_writer(path: Path, manifest, config_of: Path | None = None) -> StoreWriter:
    """A writer on the store at ``path`` with the config of the store ``config_of`` (default: its own)."""
    with open_store(config_of or path) as store:
        attrs = store.attrs
    return StoreWriter(
        path,
        manifest,
        attrs["feature"],
        attrs["dtype"],
        dim=attrs["dim"],
        num_layers=attrs["num_layers"],
        frame_rate=attrs["frame_rate"],
    )


class OneProcess(Group):
    """A run of a single process: every collective returns this process's own value."""

    def gather(self, value):
        return [value]

    def broadcast(self, value):
        return value


def extract_in_one_process(manifest: Manifest, store: Path):
    """``extract_sharded`` as rank 0 of a one-process group (shard handling without torchrun)."""
    return extract_sharded(
        OneProcess(rank=0, world=1, local_rank=0),
        manifest,
        MFCCExtractor(device="cpu"),
        store,
        batch_seconds=float(BATCH_SECONDS),
        progress=False,
    )


def assert_same_store(path: Path, reference: Path, except_ids: tuple[str, ...] = ()) -> None:
    """Same manifest rows in the same order, same config, bit-identical features."""
    with open_store(path) as store, open_store(reference) as ref:
        assert store.full_manifest.to_json() == ref.full_manifest.to_json()
        assert store.ids() == ref.ids() and len(store) == len(ref.full_manifest)
        assert store.attrs["fingerprint"] == ref.attrs["fingerprint"]
        for utt_id in ref.ids():
            if utt_id not in except_ids:
                assert np.array_equal(store.read(utt_id), ref.read(utt_id)), utt_id


def test_batches_and_folds_are_dealt_out_whole_and_balanced(monkeypatch) -> None:
    durations = {f"u{i:02d}": 0.4 + 0.37 * i for i in range(30)}
    batches = plan_batches(durations, batch_seconds=8.0)
    shares = deal_batches(batches, durations, world=3)
    assert sorted(u for share in shares for u in share) == sorted(durations)
    for batch in batches:  # each batch stays on one rank, as a single process would run it
        assert sum(set(batch) <= set(share) for share in shares) == 1
    for share in shares:  # and the rank's own planning makes the same batches again
        assert plan_batches({u: durations[u] for u in share}, batch_seconds=8.0) == [
            b for b in batches if b[0] in share
        ]
    loads = [sum(durations[u] for u in share) for share in shares]
    assert max(loads) - min(loads) <= max(sum(durations[u] for u in b) for b in batches)
    assert [fold_share(range(1, 6), r, 2) for r in range(2)] == [[1, 3, 5], [2, 4]]
    assert [fold_share([1, 3], r, 2) for r in range(2)] == [[1], [3]]  # by position, not fold number
    assert fold_share([2], 0, 4) == [2] and fold_share([2], 1, 4) == []
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    assert not launched_by_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_by_torchrun()


def test_two_ranks_extract_one_store_equal_to_a_single_process(tmp_path, csv_corpus) -> None:
    reference = single_process_store(csv_corpus, tmp_path / "single.zarr")
    target = tmp_path / "two.zarr"
    result = torchrun(*extract_args(csv_corpus, target), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{target}: 12 stored, 0 already there, 0 skipped" in result.stdout
    assert result.stdout.count("stored") == 1  # rank 0 reports for both
    assert_same_store(target, reference)
    assert verify_store(target).ok
    assert not shard_dir(target).exists()
    open_writer(target, prepare("csv", csv_corpus)).close()  # the lock was released


def test_failed_rank_stops_all_and_the_rerun_resumes_from_target_and_shards(tmp_path, csv_corpus) -> None:
    reference = single_process_store(csv_corpus, tmp_path / "single.zarr")
    manifest = prepare("csv", csv_corpus)
    ids = manifest.ids()
    target, shards = tmp_path / "two.zarr", shard_dir(tmp_path / "two.zarr")
    # A crashed earlier run: the target holds two utterances, a shard a third one, marked
    # (+1) so that reusing it instead of recomputing it shows; written through a writer,
    # so the shard's checksum is that of the marked values and the merge accepts it.
    extract_to_store(manifest.subset(ids[:2]), MFCCExtractor(device="cpu"), target, progress=False)
    with open_store(reference) as ref:
        marked = ref.read(ids[2]) + 1.0
    with open_writer(shards / "rank-1.zarr", manifest.subset([ids[2]]), config_of=reference) as writer:
        writer.write([(ids[2], marked[None])])
    bad = csv_corpus.parent / manifest[ids[7]]["path"]
    bad.write_text("not audio")

    failed = torchrun(*extract_args(csv_corpus, target), cwd=tmp_path)
    assert failed.returncode != 0
    assert "error: rank " in failed.stderr and bad.name in failed.stderr
    with open_store(target) as store:  # the earlier shard taken in at the start; nothing of this run merged
        assert store.ids() == ids[:3]
    assert len(list(shards.glob("rank-*.zarr"))) == 2

    result = torchrun(*extract_args(csv_corpus, target), "--on-error", "skip", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{target}: 8 stored, 3 already there, 1 skipped" in result.stdout
    with open_store(target) as store, open_store(reference) as ref:
        assert store.full_manifest.ids() == ids and store.ids() == [u for u in ids if u != ids[7]]
        assert np.array_equal(store.read(ids[2]), marked)
        assert all(np.array_equal(store.read(u), ref.read(u)) for u in store.ids() if u != ids[2])
        assert [item["utt_id"] for item in store.skipped()] == [ids[7]] and bad.name in store.skipped()[0]["error"]
    check = verify_store(target)
    assert not check.problems and check.missing == [ids[7]]
    assert not shards.exists()


def test_shard_entries_made_from_other_audio_are_recomputed_not_merged(tmp_path, csv_corpus) -> None:
    reference = single_process_store(csv_corpus, tmp_path / "single.zarr")
    manifest = prepare("csv", csv_corpus)
    ids = manifest.ids()
    target, shards = tmp_path / "one.zarr", shard_dir(tmp_path / "one.zarr")
    # An earlier run's shard, made when ids[0] named the audio of ids[5]; its entry of
    # ids[1] still fits the manifest and is marked (+1) so that reusing it shows.
    earlier = Manifest([{**manifest[ids[0]], "path": manifest[ids[5]]["path"]}, manifest[ids[1]]])
    with open_store(reference) as ref:
        other_audio, marked = ref.read(ids[5]), ref.read(ids[1]) + 1.0
    with open_writer(shards / "rank-0.zarr", earlier, config_of=reference) as writer:
        writer.write([(ids[0], other_audio[None]), (ids[1], marked[None])])

    with pytest.warns(UserWarning, match=f"rank-0.zarr: shard of an earlier run made for other audio .*{ids[0]}"):
        report = extract_in_one_process(manifest, target)
    assert (report.stored, report.already_done) == (12, 0)
    with open_store(target) as store:
        assert np.array_equal(store.read(ids[1]), marked)  # the matching entry is reused
    assert_same_store(target, reference, except_ids=(ids[1],))  # ids[0] recomputed from its own audio
    assert verify_store(target).ok and not shards.exists()


def test_unreadable_shards_left_by_an_interrupted_cleanup_are_removed(tmp_path, csv_corpus) -> None:
    reference = single_process_store(csv_corpus, tmp_path / "single.zarr")
    manifest = prepare("csv", csv_corpus)
    ids = manifest.ids()
    target, shards = tmp_path / "one.zarr", shard_dir(tmp_path / "one.zarr")
    for rank, (part, lost) in enumerate([(ids[:3], "zarr.json"), (ids[3:5], "index")]):
        shard = shards / f"rank-{rank}.zarr"  # half deleted: its group metadata or index array gone
        extract_to_store(manifest.subset(part), MFCCExtractor(device="cpu"), shard, progress=False)
        (shard / lost).unlink() if (shard / lost).is_file() else shutil.rmtree(shard / lost)

    with pytest.warns(UserWarning, match="not a complete shard store, removed") as warned:
        report = extract_in_one_process(manifest, target)
    assert sorted(Path(str(w.message).split(":")[0]).name for w in warned) == ["rank-0.zarr", "rank-1.zarr"]
    assert (report.stored, report.already_done) == (12, 0)
    assert_same_store(target, reference)
    assert verify_store(target).ok and not shards.exists()


def change_values(store_path: Path, utt_id: str) -> None:
    """Add 1 to the stored frames of ``utt_id``, bypassing sermtl (its checksum no longer matches)."""
    with open_store(store_path) as store:
        offset, frames = store.entries()[utt_id]
    features = ZarrBackend.open(store_path, writable=True).array("features")
    features[0, offset : offset + frames] = features[0, offset : offset + frames] + 1.0


@pytest.mark.parametrize("damage", ["changed values", "torn chunk"])
def test_damaged_shard_entries_are_recomputed_and_refused_by_merge_stores(tmp_path, csv_corpus, damage) -> None:
    reference = single_process_store(csv_corpus, tmp_path / "single.zarr")
    manifest = prepare("csv", csv_corpus)
    ids = manifest.ids()
    target, shard = tmp_path / "one.zarr", shard_dir(tmp_path / "one.zarr") / "rank-0.zarr"
    # An earlier run's shard holding ids[2] (marked +1, so that reusing it shows) and ids[3].
    with open_store(reference) as ref:
        marked, kept = ref.read(ids[2]) + 1.0, ref.read(ids[3])
    with open_writer(shard, manifest.subset(ids[2:4]), config_of=reference) as writer:
        writer.write([(ids[2], marked[None]), (ids[3], kept[None])])
    if damage == "changed values":  # ids[3] changed on disk after the write
        change_values(shard, ids[3])
        reason, recomputed = "does not match its checksum", [ids[3]]
    else:  # the chunk file holding both entries truncated, as a damaged disk would leave it
        chunk = shard / "features" / "c" / "0" / "0" / "0"
        chunk.write_bytes(chunk.read_bytes()[:7])
        reason, recomputed = r"does not read \(", [ids[2], ids[3]]

    with pytest.raises(StoreError, match=rf"{re.escape(str(shard))}: .*\b{recomputed[0]} {reason}") as error:
        merge_stores([(shard, None)], tmp_path / "merged.zarr")
    assert "\n" not in str(error.value)

    with pytest.warns(UserWarning, match=f"{shard}: shard entry of .* {reason}.*; it is recomputed") as warned:
        report = extract_in_one_process(manifest, target)
    messages = [str(w.message) for w in warned if "shard entry of" in str(w.message)]
    assert [re.search("shard entry of (\\S+) ", m)[1] for m in messages] == recomputed
    assert (report.stored, report.already_done) == (12, 0)
    reused = [u for u in ids[2:4] if u not in recomputed]
    with open_store(target) as store:
        assert all(np.array_equal(store.read(u), marked) for u in reused)
    assert_same_store(target, reference, except_ids=tuple(reused))  # the damaged entries recomputed
    assert verify_store(target).ok and not shard.parent.exists()


def test_an_unexpected_error_on_a_rank_becomes_a_one_line_error(capsys) -> None:
    group = OneProcess(rank=0, world=1, local_rank=0)
    with pytest.raises(StoreError, match=r"^rank 0: ValueError: .*'x'$"):
        group.run(int, "x")
    assert "Traceback" in capsys.readouterr().err  # the failing rank keeps the traceback for debugging
    with pytest.raises(KeyboardInterrupt):
        group.run(_interrupt)


def _interrupt() -> None:
    raise KeyboardInterrupt


def test_a_locked_target_refuses_the_distributed_run(tmp_path, csv_corpus) -> None:
    manifest = prepare("csv", csv_corpus)
    target = tmp_path / "two.zarr"
    extract_to_store(manifest.subset(manifest.ids()[:3]), MFCCExtractor(device="cpu"), target, progress=False)
    with open_writer(target, manifest):
        result = torchrun(*extract_args(csv_corpus, target), cwd=tmp_path)
    assert result.returncode != 0
    assert "error: rank 0: store" in result.stderr and "being written by another process" in result.stderr
    assert not shard_dir(target).exists()
    with open_store(target) as store:
        assert store.ids() == manifest.ids()[:3]


def test_cv_folds_over_two_ranks_match_a_single_process(tmp_path, iemocap_mfcc_store) -> None:
    options = {"epochs": 2, "channels": 16, "embedding_dim": 16, "batch_size": 8, "seed": 3, "device": "cpu"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank
    try:
        single = run_cv(
            iemocap_mfcc_store,
            tmp_path / "single",
            TrainConfig.from_dict(options),
            Protocol("group-kfold", by="speaker", folds=3),
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    result = torchrun(
        "cv",
        "--store",
        iemocap_mfcc_store,
        "--protocol",
        "group-kfold",
        "--by",
        "speaker",
        "--folds",
        "3",
        "--out",
        tmp_path / "two",
        *flags,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert len(two["folds"]) == 3
    assert two["folds"] == single["folds"] and (two["wa"], two["uwa"]) == (single["wa"], single["uwa"])
    for fold in range(1, 4):
        for name in ("predictions.csv", "history.json"):
            assert (tmp_path / "two" / f"fold_{fold}" / name).read_text() == (
                tmp_path / "single" / f"fold_{fold}" / name
            ).read_text(), (fold, name)


def test_a_sweep_over_two_ranks_matches_a_single_process_and_resumes(tmp_path, iemocap_mfcc_store) -> None:
    """(setting, seed, fold) jobs dealt to two ranks give the single process's sweep; a rerun
    after a lost fold retrains that fold only."""
    from trainer.sweep import Sweep, run_sweep

    flags = ["--epochs=1", "--channels=8", "--embedding-dim=8", "--batch-size=8", "--device=cpu"]
    protocol = ["--protocol", "group-kfold", "--by", "speaker", "--folds", "2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank
    try:
        config = TrainConfig.from_dict(
            {"epochs": 1, "channels": 8, "embedding_dim": 8, "batch_size": 8, "device": "cpu"}
        )
        single = run_sweep(
            Sweep(
                iemocap_mfcc_store,
                tmp_path / "single",
                config,
                Protocol("group-kfold", by="speaker", folds=2),
                [{"aux": "none"}, {"aux": "expression"}],
                [0],
            ),
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    args = [
        "sweep",
        "--store",
        iemocap_mfcc_store,
        *protocol,
        *flags,
        "--grid",
        "aux=none,expression",
        "--out",
        tmp_path / "two",
    ]
    result = torchrun(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    two = json.loads((tmp_path / "two" / "sweep.json").read_text())
    assert two == single
    lost = tmp_path / "two" / "aux=expression" / "seed_0" / "fold_2"
    kept = tmp_path / "two" / "aux=none" / "seed_0" / "fold_1" / "metrics.json"
    stamp = kept.stat().st_mtime_ns
    shutil.rmtree(lost)
    assert torchrun(*args, cwd=tmp_path).returncode == 0
    assert (lost / "metrics.json").is_file() and kept.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "two" / "sweep.json").read_text()) == single

"""The streaming bank: the in-memory bank's batches, bit for bit, read from the store in
chunk-grouped reads by background threads that stop when the caller does and hand their
errors over as the same typed error."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from featurestore.errors import StoreError
from featurestore.manifest import Manifest
from featurestore.store import StoreWriter, open_store
from trainer.data import (
    FeatureBank,
    StreamingBank,
    coalesce_reads,
    make_batches,
    open_bank,
    read_ahead,
)

CHUNK = 32  # frames per stored chunk: small, so an utterance spans several and a crop shares them


def write_store(path: Path, count: int = 40, dim: int = 16, layers: int = 1, seed: int = 0) -> Path:
    """A float16 store of ``count`` random utterances (10–150 frames, 4 speakers), ``CHUNK``-frame chunks."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(10, 150, size=count)
    rows = [
        {
            "utt_id": f"u{i:03d}",
            "path": f"/nowhere/u{i:03d}.wav",
            "duration": n / 100,
            "emotion": "ahns"[i % 4],
            "speaker": f"s{i % 4}",
        }
        for i, n in enumerate(frames)
    ]
    with StoreWriter(
        path,
        Manifest(rows, source="test"),
        {"feature": "test"},
        "float16",
        dim=dim,
        num_layers=layers,
        frame_rate=100.0,
        chunk_frames=CHUNK,
    ) as writer:
        items = [
            (r["utt_id"], rng.standard_normal((layers, n, dim)) * 3 + i) for i, (r, n) in enumerate(zip(rows, frames))
        ]
        for at in range(0, count, 7):
            writer.write(items[at : at + 7])
    return path


@pytest.fixture(params=["zarr", "h5"])
def store_path(request, tmp_path) -> Path:
    return write_store(tmp_path / f"bank.{request.param}")


def sermtl_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sermtl-") and t.is_alive()]


def epoch(bank: FeatureBank, seed: int, crop: int | None, batching: str = "bucketed", batch_size: int = 6) -> list:
    """One training epoch's batches as the trainer makes them, and the generator's state after it."""
    rng = np.random.default_rng(seed)
    ids = list(bank.entries)
    lengths = np.minimum(bank.lengths(ids), crop) if crop else bank.lengths(ids)
    batches = make_batches(ids, lengths, batch_size, rng, batching)
    return [*bank.iterate(batches, crop, rng)], rng.bit_generator.state


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b) > 1
    for (ids_a, x_a, len_a), (ids_b, x_b, len_b) in zip(a, b):
        assert list(ids_a) == list(ids_b)
        assert x_a.dtype == x_b.dtype == torch.float32 and x_a.shape == x_b.shape
        assert torch.equal(x_a, x_b) and torch.equal(len_a, len_b)


@pytest.mark.parametrize("crop", [None, 40, 200])
@pytest.mark.parametrize("batching", ["bucketed", "random"])
def test_streaming_epochs_equal_the_in_memory_ones_bit_for_bit(store_path, crop, batching) -> None:
    store = open_store(store_path)
    memory, streaming = FeatureBank(store), open_bank(store, budget_bytes=0)
    assert isinstance(streaming, StreamingBank) and not memory.streaming
    for seed in (0, 1):
        (from_memory, state_memory), (streamed, state_streamed) = (
            epoch(memory, seed, crop, batching),
            epoch(streaming, seed, crop, batching),
        )
        assert_same_batches(from_memory, streamed)
        assert state_memory == state_streamed  # the same draws: later epochs stay in step
    assert not sermtl_threads()
    store.close()


def test_crops_change_per_epoch_and_stay_inside_each_utterance(store_path) -> None:
    store = open_store(store_path)
    streaming = StreamingBank(store)
    first, _ = epoch(streaming, 0, 40)
    second, _ = epoch(streaming, 1, 40)
    assert [list(b[0]) for b in first] != [list(b[0]) for b in second]
    for ids, x, lengths in first:
        assert x.shape[1] == int(lengths.max()) <= 40
        for row, utt_id in enumerate(ids):
            count = int(lengths[row])
            whole = torch.from_numpy(store.read(utt_id).astype(np.float32))
            window = x[row, :count]
            starts = [s for s in range(len(whole) - count + 1) if torch.equal(whole[s : s + count], window)]
            assert starts, utt_id  # a window of its own utterance
            assert not x[row, count:].any()  # zero padding
    store.close()


def test_weighted_layers_and_one_layer_of_a_multi_layer_store(tmp_path) -> None:
    store = open_store(write_store(tmp_path / "layers.zarr", count=24, layers=3))
    for layer in ("weighted", 1, "last"):
        memory, streaming = FeatureBank(store, layer), StreamingBank(store, layer)
        a, _ = epoch(memory, 3, 30)
        b, _ = epoch(streaming, 3, 30)
        assert_same_batches(a, b)
        assert a[0][1].dim() == (4 if layer == "weighted" else 3)
    store.close()


def test_statistics_and_speaker_normalised_batches_are_the_same(store_path) -> None:
    store = open_store(store_path)
    memory, streaming = FeatureBank(store), StreamingBank(store)
    ids = store.ids()
    for got, want in zip(streaming.statistics(ids), memory.statistics(ids)):
        assert torch.equal(got, want)
    groups = {}
    for utt_id in ids:
        groups.setdefault(store.manifest[utt_id]["speaker"], []).append(utt_id)
    a, _ = epoch(memory.speaker_normalised(groups), 5, 40)
    b, _ = epoch(streaming.speaker_normalised(groups), 5, 40)
    assert_same_batches(a, b)
    store.close()


def test_reads_are_grouped_by_chunk_in_storage_order(store_path, monkeypatch) -> None:
    store = open_store(store_path)
    streaming = StreamingBank(store)
    reads: list[tuple[int, int]] = []
    real = store.read_frames

    def recording(layer: int, start: int, stop: int) -> np.ndarray:
        reads.append((start, stop))
        return real(layer, start, stop)

    monkeypatch.setattr(store, "read_frames", recording)
    ids = store.ids()[::-1][:12]  # neighbours in the store, asked for in reverse
    x, _ = streaming.gather(ids, [(0, streaming.entries[u][1]) for u in ids])
    assert torch.equal(x, FeatureBank(store).gather(ids, [(0, streaming.entries[u][1]) for u in ids])[0])
    assert reads == sorted(reads) and len(reads) == 1  # back to back in the store: one read
    chunks = [k for start, stop in reads for k in range(start // CHUNK, (stop - 1) // CHUNK + 1)]
    assert len(chunks) == len(set(chunks))
    store.close()


def test_coalesced_reads_cover_every_range_and_read_each_chunk_once() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        starts = rng.integers(0, 5000, size=rng.integers(1, 30))
        ranges = [(int(s), int(s + n)) for s, n in zip(starts, rng.integers(1, 300, size=len(starts)))]
        reads = coalesce_reads(ranges, 64)
        assert sorted(i for _, _, members in reads for i in members) == list(range(len(ranges)))
        for start, stop, members in reads:
            assert all(start <= ranges[i][0] and ranges[i][1] <= stop for i in members)
        chunks = [k for start, stop, _ in reads for k in range(start // 64, (stop - 1) // 64 + 1)]
        assert len(chunks) == len(set(chunks)) and chunks == sorted(chunks)
        needed = {k for start, stop in ranges for k in range(start // 64, (stop - 1) // 64 + 1)}
        assert set(chunks) == needed  # nothing read that no range needs


def test_a_read_error_surfaces_in_the_caller_as_the_same_typed_error(store_path, monkeypatch) -> None:
    store = open_store(store_path)
    streaming = StreamingBank(store)
    batches = make_batches(store.ids(), streaming.lengths(store.ids()), 4, np.random.default_rng(0))
    error = StoreError("store bank: chunk 3 unreadable")
    reading = threading.local()  # which batch this reading thread is on
    real_read, real_fetch = store.read_frames, streaming.fetch

    def failing(layer: int, start: int, stop: int) -> np.ndarray:
        if reading.ids == list(batches[3]):
            raise error
        return real_read(layer, start, stop)

    def fetch(ids, spans):
        reading.ids = list(ids)
        return real_fetch(ids, spans)

    monkeypatch.setattr(store, "read_frames", failing)
    monkeypatch.setattr(streaming, "fetch", fetch)
    got = []
    with pytest.raises(StoreError) as raised:
        for item in streaming.iterate(batches, 40, np.random.default_rng(0)):
            got.append(item)
    assert raised.value is error and len(got) == 3  # where the fourth batch would have come
    assert not sermtl_threads()
    store.close()


def test_a_damaged_chunk_is_a_store_error_naming_verify(tmp_path) -> None:
    path = write_store(tmp_path / "damaged.zarr")
    chunk = next(p for p in (path / "features").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"\x00" * 7)  # wrong size for a chunk of float16 frames
    store = open_store(path)
    streaming = StreamingBank(store)
    ids = store.ids()
    with pytest.raises(StoreError, match=r"sermtl verify"):
        list(streaming.iterate(make_batches(ids, streaming.lengths(ids), 8, np.random.default_rng(0))))
    assert not sermtl_threads()
    store.close()


def test_an_abandoned_epoch_leaves_no_thread_running(store_path) -> None:
    store = open_store(store_path)
    streaming = StreamingBank(store)
    ids = store.ids()
    batches = make_batches(ids, streaming.lengths(ids), 2, np.random.default_rng(0))

    iterator = streaming.iterate(batches, 40, np.random.default_rng(0))
    assert not sermtl_threads()  # nothing starts before the first batch is asked for
    next(iterator)
    assert sermtl_threads()
    del iterator  # dropped midway
    assert not sermtl_threads()

    def first_two() -> int:
        for i, _ in enumerate(streaming.iterate(batches, 40, np.random.default_rng(0))):
            if i == 1:
                break  # leaving the loop drops the iterator
        return i

    assert first_two() == 1 and not sermtl_threads()
    iterator = streaming.iterate(batches)
    next(iterator)
    iterator.close()
    assert not sermtl_threads()
    del iterator
    gc.collect()
    store.close()


def test_read_ahead_stays_bounded(store_path, monkeypatch) -> None:
    store = open_store(store_path)
    streaming = StreamingBank(store)
    fetched = []
    real = streaming.fetch
    monkeypatch.setattr(streaming, "fetch", lambda ids, spans: fetched.append(1) or real(ids, spans))
    ids = store.ids()
    batches = make_batches(ids, streaming.lengths(ids), 2, np.random.default_rng(0))
    assert len(batches) == 20
    iterator = streaming.iterate(batches)
    next(iterator)
    for _ in range(100):  # let the threads run as far ahead as they may
        before = len(fetched)
        time.sleep(0.02)
        if len(fetched) == before:
            break
    assert len(fetched) <= 1 + StreamingBank.PREFETCH_BATCHES  # the batch taken, and those made ahead
    iterator.close()
    store.close()


def test_read_ahead_hands_over_items_and_errors_in_order() -> None:
    def make(i: int) -> int:
        if i == 2:
            raise KeyError("third")
        time.sleep(0.01 * (i % 2))  # the second thread finishes out of order
        return i

    iterator = read_ahead(make, 6, depth=3, name="sermtl-test", workers=2)
    assert [next(iterator), next(iterator)] == [0, 1]
    with pytest.raises(KeyError, match="third"):
        next(iterator)
    assert not sermtl_threads()
    assert list(read_ahead(make, 0, depth=3, name="sermtl-test")) == []
    assert list(read_ahead(lambda i: -i, 9, depth=1, name="sermtl-test", workers=3)) == [
        0,
        -1,
        -2,
        -3,
        -4,
        -5,
        -6,
        -7,
        -8,
    ]
    assert not sermtl_threads()

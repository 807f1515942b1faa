"""openSMILE features computed by several processes (``workers``): the serial values bit for
bit, a pool started once and reused, the serial path's errors, ``workers`` outside the
fingerprint (a store resumes with another count), and Ctrl-C that stops at once."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from featurestore.errors import ConfigError, SermtlError
from featurestore.extract_options import ExtractOptions
from featurestore.features import accepted_options, build_extractor
from featurestore.manifest import Manifest
from featurestore.pipeline import extract_to_store
from featurestore.store import open_store
from featurestore.synthetic import synth_utterance

opensmile = pytest.importorskip("opensmile")

from featurestore.features import opensmile_sets  # noqa: E402  (imports opensmile)

FEATURES = ("egemaps", "compare", "egemaps-functionals", "compare-functionals")
REPO = Path(__file__).resolve().parents[2]


def waves(count: int = 6) -> list[np.ndarray]:
    """Generated utterances of different lengths, the shortest openSMILE takes included."""
    out = [synth_utterance("angry", "spontaneous", 0.3 + 0.25 * i, 16000, seed=i) for i in range(count - 1)]
    return [*out, 0.1 * np.random.default_rng(0).standard_normal(960).astype(np.float32)]


def counting_parent(extractor) -> list[int]:
    """Count the waves ``extractor`` computes in this process (the rest went to its pool)."""
    calls: list[int] = []
    own = extractor.extract_one
    extractor.extract_one = lambda wave: calls.append(1) or own(wave)
    return calls


@pytest.mark.parametrize("name", FEATURES)
def test_two_workers_give_the_serial_features_bit_for_bit(name) -> None:
    batch = waves()
    serial = build_extractor(name).extract_batch(batch)
    extractor = build_extractor(name, workers=2)
    here = counting_parent(extractor)
    try:
        pooled = extractor.extract_batch(batch)
    finally:
        extractor.close()
    assert 0 < len(here) < len(batch)  # both this process and the pool computed some
    assert len(pooled) == len(serial) == len(batch)
    for ours, reference in zip(pooled, serial):
        assert ours.dtype == reference.dtype == np.float32 and ours.shape == reference.shape
        assert np.array_equal(ours, reference)


def test_workers_reach_the_constructor_but_not_the_fingerprint() -> None:
    from featurestore.extraction import _extractor

    assert accepted_options("egemaps", {"workers": 3, "model": "m", "layers": "all", "device": "cpu"}) == {
        "workers": 3,
        "device": "cpu",
    }
    assert "workers" not in accepted_options("mfcc", {"workers": 3})
    built = _extractor(ExtractOptions(feature="compare-functionals", workers=3))
    assert built.workers == 3 and built._pool is None  # no process before the first batch
    for name in FEATURES:
        one, four = build_extractor(name), build_extractor(name, workers=4)
        assert one.describe() == four.describe() and one.fingerprint() == four.fingerprint()
        assert "workers" not in four.describe()
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="--workers"):
            build_extractor("egemaps", workers=bad)


def test_the_pool_starts_once_is_reused_and_ends_with_close_or_the_extractor(monkeypatch) -> None:
    started = []
    new_pool = opensmile_sets._new_pool
    monkeypatch.setattr(opensmile_sets, "_new_pool", lambda *args: started.append(args) or new_pool(*args))
    extractor = build_extractor("egemaps", workers=3)
    batch = waves(5)
    reference = build_extractor("egemaps").extract_batch(batch)
    for _ in range(3):
        assert all(np.array_equal(a, b) for a, b in zip(extractor.extract_batch(batch), reference))
    assert len(started) == 1 and started[0][0] == 2  # this process computes too: 2 more
    processes = list(extractor._pool._processes.values())
    assert len(processes) == 2 and all(p.is_alive() for p in processes)
    assert extractor.extract_batch([]) == []
    extractor.close()
    assert extractor._pool is None and not any(p.is_alive() for p in processes)
    extractor.close()  # twice is harmless
    extractor.extract_batch(batch[:2])  # a later batch starts a new pool
    assert len(started) == 2
    processes = list(extractor._pool._processes.values())
    del extractor
    gc.collect()
    assert not any(p.is_alive() for p in processes)


def test_an_error_for_a_wave_is_the_serial_one() -> None:
    """The first bad wave's error, in the batch's order, whichever process computed it."""
    batch = waves(5)
    first, last = np.array(["a"] * 2000), np.array(["b"] * 2000)  # openSMILE cannot read these
    serial, pooled = build_extractor("compare"), build_extractor("compare", workers=2)
    here = counting_parent(pooled)
    try:
        pooled.extract_batch(batch)  # the worker started, and idle again
        for case, bad in enumerate(([*batch, last], [*batch, last, batch[0]], [first, *batch, last])):
            here.clear()
            with pytest.raises(ValueError) as expected:
                serial.extract_batch(bad)
            with pytest.raises(ValueError) as got:
                pooled.extract_batch(bad)
            assert str(got.value) == str(expected.value) and "could not convert string to float" in str(got.value)
            if case == 0:  # the pool takes the batch's end: this error came from the worker
                assert len(here) < len(bad)
        assert pooled.extract_batch(batch[:3])[2].shape == serial.extract_batch(batch[:3])[2].shape  # still usable
    finally:
        pooled.close()


def write_corpus(folder: Path, loud: str) -> Manifest:
    """Eight utterances of silence, whose ComParE features fit float16, but for ``loud``:
    noise, whose do not."""
    folder.mkdir()
    rows = []
    for i in range(8):
        utt_id = f"u{i}"
        wave = (
            np.clip(np.random.default_rng(i).normal(0, 0.5, 16000), -1, 1)
            if utt_id == loud
            else np.zeros(2000 + 500 * i)
        )
        sf.write(str(folder / f"{utt_id}.wav"), wave.astype(np.float32), 16000)
        rows.append({"utt_id": utt_id, "path": str(folder / f"{utt_id}.wav"), "emotion": "sad", "speaker": "s1"})
    return Manifest(rows)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # the float16 check
def test_a_bad_item_is_named_as_in_the_serial_path(tmp_path) -> None:
    manifest = write_corpus(tmp_path / "audio", loud="u6")
    errors = []
    for workers in (1, 2):
        with pytest.raises(SermtlError) as failed:
            extract_to_store(
                manifest,
                build_extractor("compare", workers=workers),
                tmp_path / f"f{workers}.zarr",
                dtype="float16",
                progress=False,
            )
        errors.append(str(failed.value))
    assert errors[0] == errors[1] and errors[0].startswith("u6: features up to ") and "u6.wav" in errors[0]
    reports = []
    for workers in (1, 2):
        store = tmp_path / f"s{workers}.zarr"
        extractor = build_extractor("compare", workers=workers)
        reports.append(extract_to_store(manifest, extractor, store, dtype="float16", on_error="skip", progress=False))
        extractor.close()
    assert reports[0].skipped == reports[1].skipped and [s["utt_id"] for s in reports[0].skipped] == ["u6"]
    with open_store(tmp_path / "s1.zarr") as one, open_store(tmp_path / "s2.zarr") as two:
        assert sorted(one.ids()) == sorted(two.ids()) and len(one.ids()) == 7
        assert all(np.array_equal(one.read(u), two.read(u)) for u in one.ids())


def test_a_store_made_with_one_worker_resumes_with_four(tmp_path) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    rows = []
    for i in range(6):
        sf.write(str(folder / f"u{i}.wav"), synth_utterance("happy", "acted", 0.4 + 0.1 * i, 16000, seed=i), 16000)
        rows.append({"utt_id": f"u{i}", "path": str(folder / f"u{i}.wav"), "emotion": "happy", "speaker": "s1"})
    manifest, store = Manifest(rows), tmp_path / "s.zarr"
    extract_to_store(manifest.subset([f"u{i}" for i in range(3)]), build_extractor("egemaps"), store, progress=False)
    extractor = build_extractor("egemaps", workers=4)
    report = extract_to_store(manifest, extractor, store, progress=False)
    extractor.close()
    assert (report.already_done, report.stored) == (3, 3)
    serial = tmp_path / "serial.zarr"
    extract_to_store(manifest, build_extractor("egemaps"), serial, progress=False)
    with open_store(store) as resumed, open_store(serial) as reference:
        assert resumed.attrs["fingerprint"] == reference.attrs["fingerprint"]
        assert all(np.array_equal(resumed.read(u), reference.read(u)) for u in manifest.ids())


def test_a_ctrl_c_during_a_wave_is_raised_after_it_not_dropped() -> None:
    before = signal.getsignal(signal.SIGINT)
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with opensmile_sets.interrupts_between_waves() as deliver:
            signal.raise_signal(signal.SIGINT)  # as if in openSMILE's callback: only noted
            reached.append("after the signal")
            deliver()
            reached.append("after deliver")
    assert reached == ["after the signal"] and signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt):  # noted while a wave failed: not lost either
        with opensmile_sets.interrupts_between_waves():
            signal.raise_signal(signal.SIGINT)
            raise ValueError("a bad wave")
    assert signal.getsignal(signal.SIGINT) is before
    with opensmile_sets.interrupts_between_waves() as deliver:
        deliver()  # nothing noted: nothing raised


LONG_BATCH = textwrap.dedent(
    """
    import sys
    from featurestore.features import build_extractor
    from featurestore.synthetic import synth_utterance

    if __name__ == "__main__":
        extractor = build_extractor("compare", workers=int(sys.argv[1]))
        extractor.extract_batch([synth_utterance("sad", "acted", 1.0, 16000, seed=0)] * 3)
        pool = extractor._pool
        print("ready", *(pool._processes if pool else ()), flush=True)
        extractor.extract_batch([synth_utterance("sad", "acted", 4.0, 16000, seed=0)] * 400)  # 30 s or more
        print("finished", flush=True)
    """
)


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_during_a_long_batch(
    tmp_path: Path, workers: int, sig: int
) -> tuple[subprocess.CompletedProcess, float, list[int]]:
    """Run :data:`LONG_BATCH` with ``workers``, send ``sig`` to its process group (as a
    terminal's Ctrl-C does) in the middle of the batch; its result, the seconds it took to
    stop and its worker processes."""
    script = tmp_path / "long_batch.py"
    script.write_text(LONG_BATCH)
    process = subprocess.Popen(
        [sys.executable, str(script), str(workers)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        ready = process.stdout.readline().split()
        assert ready and ready[0] == "ready", process.stderr.read()
        time.sleep(0.5)
        sent = time.monotonic()
        (os.killpg if sig == signal.SIGINT else os.kill)(process.pid, sig)
        out, err = process.communicate(timeout=20)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), took, [int(p) for p in ready[1:]]


def wait_gone(pids: list[int], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(running(pid) for pid in pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("workers", [1, 3])
def test_ctrl_c_stops_this_process_and_its_workers_at_once(tmp_path, workers) -> None:
    """In one process too: a Ctrl-C landing in openSMILE's ctypes callback used to be dropped."""
    result, took, pids = stop_during_a_long_batch(tmp_path, workers, signal.SIGINT)
    assert result.returncode != 0 and "KeyboardInterrupt" in result.stderr and "finished" not in result.stdout
    assert "Exception ignored" not in result.stderr
    assert took < 5, took  # not after the batch
    assert len(pids) == workers - 1 and wait_gone(pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_their_parent_is_killed(tmp_path) -> None:
    result, _, pids = stop_during_a_long_batch(tmp_path, 3, signal.SIGKILL)
    assert result.returncode == -signal.SIGKILL and len(pids) == 2 and wait_gone(pids)

"""Log-mel features in bounded memory: frames are transformed a slice at a time, which
changes no value (stores of real speech compared checksum for checksum with and without
slicing, on the CPU's numpy path and on torch's), and a CPU extraction never loads torch."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from featurestore.features import spectral
from featurestore.features.fbank import FbankExtractor
from featurestore.features.mfcc import MFCCExtractor
from featurestore.pipeline import extract_to_store
from featurestore.store.reader import open_store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def urdu_manifest(shared_data: Path):
    """40 utterances of the real Urdu corpus (about 2.5 minutes of speech)."""
    from featurestore.corpora import prepare
    from featurestore.manifest import Manifest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = prepare("urdu", shared_data / "urdu")
    return Manifest([manifest[u] for u in manifest.ids()[:40]], source="urdu subset")


def _store_checksums(path: Path) -> dict[str, str]:
    """SHA-256 of every stored utterance's features."""
    with open_store(path) as store:
        return {u: hashlib.sha256(store.read(u).tobytes()).hexdigest() for u in store.ids()}


@pytest.mark.parametrize("extractor_class", [MFCCExtractor, FbankExtractor], ids=["mfcc", "fbank"])
@pytest.mark.parametrize("on_numpy", [True, False], ids=["numpy", "torch"])
def test_slicing_changes_no_value_of_a_store_of_real_speech(
    urdu_manifest, tmp_path: Path, monkeypatch, extractor_class, on_numpy: bool
) -> None:
    def extract(path: Path) -> dict[str, str]:
        extractor = extractor_class(device="cpu")
        extractor._on_numpy = on_numpy  # the torch path, as on a GPU, computed on the CPU
        extract_to_store(urdu_manifest, extractor, path, batch_seconds=600.0, progress=False)
        return _store_checksums(path)

    sliced = extract(tmp_path / "sliced.zarr")
    assert len(spectral.frame_slices(sum(int(r["duration"] * 100) for r in urdu_manifest))) >= 2  # really sliced
    monkeypatch.setattr(spectral.frame_slices, "__defaults__", (10**9,))  # one slice: as before slicing
    whole = extract(tmp_path / "whole.zarr")
    assert sliced == whole


@pytest.mark.parametrize("extractor_class", [MFCCExtractor, FbankExtractor], ids=["mfcc", "fbank"])
def test_the_numpy_and_torch_paths_agree_on_real_speech(urdu_manifest, extractor_class) -> None:
    from featurestore.audio import load_audio

    waves = [load_audio(urdu_manifest[u]["path"]) for u in urdu_manifest.ids()[:12]]
    on_numpy = extractor_class(device="cpu").extract_batch(waves)
    torch_path = extractor_class(device="cpu")
    torch_path._on_numpy = False
    on_torch = torch_path.extract_batch(waves)
    for ours, theirs in zip(on_numpy, on_torch):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.float32
        scale = np.abs(theirs).max()
        assert np.abs(ours - theirs).max() <= 1e-5 * scale  # float32 rounding: a thousandth of a dB in 100


def test_a_cpu_extraction_never_imports_torch(csv_corpus: Path, tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "from featurestore.corpora import prepare\n"
        "from featurestore.features import build_extractor\n"
        "from featurestore.pipeline import extract_to_store\n"
        f"manifest = prepare('csv', {str(csv_corpus)!r})\n"
        "for feature in ('mfcc', 'fbank'):\n"
        f"    report = extract_to_store(manifest, build_extractor(feature, device='auto'), {str(tmp_path)!r} + f'/{{feature}}.zarr', progress=False)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'stored': report.stored}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if not spectral.gpu_absent("auto"):
        pytest.skip("this machine has a GPU driver: auto means torch on the GPU")
    assert found == {"torch": False, "stored": 12}


def test_frame_slices_cover_every_frame_once_and_none_is_short() -> None:
    for total in (0, 1, 15, 4095, 4096, 4097, 6143, 6144, 10**5):
        slices = spectral.frame_slices(total, 4096)
        assert slices[0][0] == 0 and slices[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
        assert all(hi - lo >= 2048 for lo, hi in slices) or len(slices) == 1


def test_the_fft_kernel_gives_scipy_fft_bit_for_bit_and_falls_back_to_it(monkeypatch) -> None:
    import importlib.util

    import scipy.fft

    from featurestore.features.spectral import real_fft

    frames = np.random.default_rng(3).standard_normal((300, 512)).astype(np.float32)
    frames[:, 400:] = 0.0  # windowed frames zero-padded to n_fft, as the extractor gives them
    expected = scipy.fft.rfft(frames[:, :400], n=512, axis=-1)
    ours = real_fft()(frames.copy())
    assert ours.dtype == expected.dtype == np.complex64 and np.array_equal(ours, expected)

    def no_scipy(name: str, *args: object) -> None:
        raise ImportError(name)

    monkeypatch.setattr(importlib.util, "find_spec", no_scipy)
    fallback = real_fft.__wrapped__()  # another layout: the public function
    assert np.array_equal(fallback(frames.copy()), expected)

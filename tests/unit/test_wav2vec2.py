"""The ``w2v2`` extractor on tiny random models (no network, CPU, float32).

Tolerances: batched vs one-by-one features must agree within ``ATOL = 1e-4`` absolute,
where the tiny models' features have a scale of about 1-4 (layer-normed hidden
states), i.e. about 3e-5 relative; measured differences are about 3e-6. The reference
for "one-by-one" is the transformers model run on a single normalised utterance with no
mask at all, independent of the extractor's code. Chunked extraction is exact (within
ATOL) at hidden state 0 wherever the window context covers the positional conv
(±8 frames for the tiny models), and within a few percent of the feature scale in the
transformer layers (measured: about 1.7e-2 at layer 1, 3.3e-2 at layer 2 for 2 s cores
with 0.5 s context).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from featurestore.errors import AudioError, ConfigError, ModelError
from featurestore.features.random_models import save_random_ssl_model
from featurestore.features.wav2vec2 import SSLExtractor

ATOL = 1e-4
SR = 16000
#: (kind, feat_extract_norm) of the tiny models under test
VARIANTS = {
    "wav2vec2-group": ("wav2vec2", "group"),
    "wav2vec2-layer": ("wav2vec2", "layer"),
    "hubert-group": ("hubert", "group"),
    "wavlm-group": ("wavlm", "group"),
}
#: 0.3 s, 1.1 s, 2.7 s and 416 samples (26 ms, just above the 400-sample receptive field)
LENGTHS = (int(0.3 * SR), int(1.1 * SR), int(2.7 * SR), 416)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ssl_models")
    dirs = {
        name: save_random_ssl_model(root / name, kind=kind, feat_extract_norm=norm)
        for name, (kind, norm) in VARIANTS.items()
    }
    dirs["wav2vec2-group-seed1"] = save_random_ssl_model(root / "seed1", seed=1)
    return dirs


@pytest.fixture(scope="module")
def extractors(model_dirs: dict[str, Path]) -> dict[str, SSLExtractor]:
    """One ``layers=all`` extractor per variant, unchunked, on the CPU."""
    return {
        name: SSLExtractor(model=str(model_dirs[name]), layers="all", device="cpu", chunk_seconds=None)
        for name in VARIANTS
    }


def _waves(lengths: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    """Noise with a slow loudness envelope and a DC offset, one per length."""
    rng = np.random.default_rng(seed)
    waves = []
    for n in lengths:
        envelope = 0.1 * (1.2 + np.sin(np.arange(n) / 900.0))
        waves.append((rng.standard_normal(n) * envelope + 0.05).astype(np.float32))
    return waves


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)


def _hf_hidden_states(model: torch.nn.Module, batch: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    """All hidden states straight from transformers, ``(layers, batch, frames, dim)``."""
    with torch.inference_mode():
        output = model(batch, attention_mask=mask, output_hidden_states=True)
    return torch.stack(output.hidden_states).numpy()


def _reference(ext: SSLExtractor, wave: np.ndarray) -> np.ndarray:
    """One utterance alone through transformers, no padding and no mask."""
    return _hf_hidden_states(ext.model, torch.from_numpy(_normalise(wave))[None])[:, 0]


# (a) batched == one-by-one -------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_batched_equals_one_by_one(extractors: dict[str, SSLExtractor], variant: str) -> None:
    ext = extractors[variant]
    waves = _waves(LENGTHS)
    batched = ext.extract_batch(waves)
    diffs = []
    for wave, features in zip(waves, batched):
        reference = _reference(ext, wave)
        alone = ext.extract_batch([wave])[0]
        assert features.dtype == np.float32
        assert features.shape == reference.shape == alone.shape
        diffs.append(max(np.abs(features - reference).max(), np.abs(features - alone).max()))
    print(f"{variant}: max |batched - one-by-one| = {max(diffs):.2e}")
    assert max(diffs) < ATOL
    assert np.abs(batched[0]).max() > 0.1  # the features are not trivially zero


def test_naive_padding_is_not_one_by_one(extractors: dict[str, SSLExtractor]) -> None:
    """Zero padding, with or without transformers' attention mask, breaks group-norm models."""
    waves = _waves(LENGTHS)
    references = {}
    for variant in ("wav2vec2-group", "wav2vec2-layer"):
        ext = extractors[variant]
        padded = torch.zeros(len(waves), max(LENGTHS))
        for row, wave in enumerate(waves):
            padded[row, : len(wave)] = torch.from_numpy(_normalise(wave))
        mask = (torch.arange(padded.shape[1])[None] < torch.tensor(LENGTHS)[:, None]).long()
        no_mask = _hf_hidden_states(ext.model, padded)
        mask_only = _hf_hidden_states(ext.model, padded, mask)
        references[variant] = []
        for row, wave in enumerate(waves):
            frames = ext.num_frames(len(wave))
            reference = _reference(ext, wave)
            references[variant].append(
                (
                    np.abs(no_mask[:, row, :frames] - reference).max(),
                    np.abs(mask_only[:, row, :frames] - reference).max(),
                )
            )
        print(f"{variant}: naive padding (no mask, mask only) diffs per utterance: {references[variant]}")
    # the group-norm model: every padded utterance is far off, mask or not
    for row, (no_mask_diff, mask_only_diff) in enumerate(references["wav2vec2-group"]):
        if LENGTHS[row] < max(LENGTHS):
            assert no_mask_diff > 0.1 and mask_only_diff > 0.1
    # the layer-norm model: the attention mask alone is enough
    assert max(mask_only_diff for _, mask_only_diff in references["wav2vec2-layer"]) < ATOL


# (b) frame counts --------------------------------------------------------------------


def test_frame_counts(extractors: dict[str, SSLExtractor]) -> None:
    ext = extractors["wav2vec2-group"]
    assert ext.min_samples == 400 and ext.total_stride == 320
    assert ext.num_frames(399) == 0 and ext.num_frames(400) == 1 and ext.num_frames(719) == 1
    assert ext.num_frames(720) == 2
    lengths = (400, 401, 719, 720, SR, 3 * SR + 7)
    hf_counts = ext.model._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
    assert [ext.num_frames(n) for n in lengths] == hf_counts
    assert [(n - 400) // 320 + 1 for n in lengths] == hf_counts
    outputs = ext.extract_batch(_waves(lengths))
    assert [features.shape[1] for features in outputs] == hf_counts
    assert ext.num_frames(10 * SR) / 10 == pytest.approx(49.9)  # tends to 16000 / 320 = 50
    assert ext.num_frames(60 * SR) == 2999
    assert ext.dim == 32


# (c) layer selection -----------------------------------------------------------------


def test_layer_selection(model_dirs: dict[str, Path], extractors: dict[str, SSLExtractor]) -> None:
    path = str(model_dirs["wav2vec2-group"])
    all_layers = extractors["wav2vec2-group"]
    assert all_layers.num_layers == 3 and all_layers.config.layers == [0, 1, 2]
    wave = _waves((SR,))
    full = all_layers.extract_batch(wave)[0]
    assert full.shape == (3, 49, 32)

    last = SSLExtractor(model=path, device="cpu")
    assert last.config.layers == [2] and last.num_layers == 1
    np.testing.assert_allclose(last.extract_batch(wave)[0], full[2:], atol=ATOL)

    picked = SSLExtractor(model=path, layers="0,2", device="cpu")
    assert picked.config.layers == [0, 2]
    np.testing.assert_allclose(picked.extract_batch(wave)[0], full[[0, 2]], atol=ATOL)
    assert not np.allclose(full[0], full[2], atol=1e-3)

    for bad in ("3", "-1", "0,x", "1,1", "first"):
        with pytest.raises(ConfigError, match=rf"^--layers {re.escape(repr(bad))}:") as info:
            SSLExtractor(model=path, layers=bad, device="cpu")
        assert "\n" not in str(info.value)


# (d) chunking --------------------------------------------------------------------------


def _core_boundaries(frames: int, chunk_seconds: float) -> np.ndarray:
    core = round(chunk_seconds * SR / 320)
    return np.linspace(0, frames, int(np.ceil(frames / core)) + 1).round().astype(int)[1:-1]


@pytest.mark.parametrize("variant", ["wav2vec2-group", "wav2vec2-layer"])
def test_chunked_matches_unchunked(
    model_dirs: dict[str, Path], extractors: dict[str, SSLExtractor], variant: str
) -> None:
    # 7.3 s: a quiet first third, then loud, so window and utterance statistics differ
    rng = np.random.default_rng(1)
    n = int(7.3 * SR)
    wave = (rng.standard_normal(n) * np.where(np.arange(n) < n // 3, 0.05, 1.0)).astype(np.float32)
    full = extractors[variant].extract_batch([wave])[0]
    chunked_ext = SSLExtractor(
        model=str(model_dirs[variant]), layers="all", device="cpu", chunk_seconds=2.0, chunk_context_seconds=0.5
    )
    chunked = chunked_ext.extract_batch([wave, wave[:SR]])
    assert chunked[0].shape == full.shape == (3, chunked_ext.num_frames(n), 32)
    # a 1 s wave is below chunk_seconds: processed whole, batched with the long one
    np.testing.assert_allclose(chunked[1], extractors[variant].extract_batch([wave[:SR]])[0], atol=ATOL)

    diff = np.abs(chunked[0] - full).max(axis=2)  # (layers, frames)
    print(f"{variant}: chunked vs unchunked max diff per layer {diff.max(axis=1)}, scale {np.abs(full).max():.2f}")
    # conv features and hidden state 0 are exact: 0.5 s context > the ±8-frame positional conv
    assert diff[0].max() < ATOL
    # the transformer layers only see 0.5 s past each core: a small approximation
    assert diff.max() < 0.05 * np.abs(full).max()
    assert diff[1:].max() > ATOL  # (it is an approximation: the test would notice exactness)


def test_chunk_windows_use_whole_utterance_group_norm(model_dirs: dict[str, Path]) -> None:
    """Each window alone would normalise with its own statistics; the chunker does not."""
    rng = np.random.default_rng(2)
    n = int(6.0 * SR)
    wave = (rng.standard_normal(n) * np.where(np.arange(n) < n // 2, 0.02, 1.0)).astype(np.float32)
    path = str(model_dirs["wav2vec2-group"])
    whole = SSLExtractor(model=path, layers="0", device="cpu", chunk_seconds=None).extract_batch([wave])[0]
    chunked = SSLExtractor(
        model=path, layers="0", device="cpu", chunk_seconds=2.0, chunk_context_seconds=0.0
    ).extract_batch([wave])[0]
    # with no context, frames within 8 of a core edge lose positional-conv neighbours
    frames = whole.shape[1]
    edges = _core_boundaries(frames, 2.0)
    interior = np.min(np.abs(np.arange(frames)[:, None] - edges[None, :]), axis=1) >= 10
    assert interior.sum() > 0.7 * frames
    assert np.abs(chunked[0, interior] - whole[0, interior]).max() < ATOL
    # the first window (the quiet part) run on its own: its own statistics, other features
    alone = SSLExtractor(model=path, layers="0", device="cpu", chunk_seconds=None)
    window = wave[: (edges[0] - 1) * 320 + 400]
    window_alone = alone.extract_batch([window])[0]
    inner = slice(10, edges[0] - 10)
    assert np.abs(window_alone[0, inner] - whole[0, inner]).max() > 0.1


# (e) errors ----------------------------------------------------------------------------


def test_too_short_input_raises(extractors: dict[str, SSLExtractor]) -> None:
    ext = extractors["wav2vec2-group"]
    with pytest.raises(AudioError, match=r"^utterance 1\b.*\b399 samples\b.*\(400 samples\b") as info:
        ext.extract_batch(_waves((SR, 399)))
    assert "\n" not in str(info.value)
    assert ext.extract_batch(_waves((400,)))[0].shape == (3, 1, 32)


def test_unloadable_model_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=rf"^--model {re.escape(str(tmp_path))}:"):
        SSLExtractor(model=str(tmp_path), device="cpu")


# (f) fingerprint -----------------------------------------------------------------------


def test_fingerprint(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    path = str(model_dirs["wav2vec2-group"])
    first, again = SSLExtractor(model=path, device="cpu"), SSLExtractor(model=path, device="cpu")
    assert first.fingerprint() == again.fingerprint()
    described = first.describe()
    json.dumps(described)
    assert described["feature"] == "w2v2"
    assert described["model_class"] == "Wav2Vec2Model"
    assert (described["hidden_size"], described["num_hidden_layers"]) == (32, 2)
    assert described["feat_extract_norm"] == "group" and described["precision"] == "float32"
    assert len(described["weights_sha256"]) == 64

    assert SSLExtractor(model=path, layers="all", device="cpu").fingerprint() != first.fingerprint()
    assert SSLExtractor(model=path, chunk_seconds=10, device="cpu").fingerprint() != first.fingerprint()
    other_seed = SSLExtractor(model=str(model_dirs["wav2vec2-group-seed1"]), device="cpu")
    assert other_seed.config.weights_sha256 != first.config.weights_sha256
    # the same seed rebuilds the same weights
    rebuilt = SSLExtractor(model=str(save_random_ssl_model(tmp_path / "rebuilt", seed=0)), device="cpu")
    assert rebuilt.config.weights_sha256 == first.config.weights_sha256


# (g) input normalisation ---------------------------------------------------------------


def test_input_normalisation(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Scale and offset do not matter with do_normalize; without it they do.

    The layer-norm model is used because it has conv biases: the group-norm model's
    first group norm would hide the input's scale and offset by itself.
    """
    wave = _waves((int(1.5 * SR),))[0]
    louder = wave * 3 + 0.2
    ext = SSLExtractor(model=str(model_dirs["wav2vec2-layer"]), layers="all", device="cpu")
    assert ext.config.do_normalize is True
    np.testing.assert_allclose(ext.extract_batch([louder])[0], ext.extract_batch([wave])[0], atol=ATOL)

    raw_dir = tmp_path / "no_normalize"
    shutil.copytree(model_dirs["wav2vec2-layer"], raw_dir)
    preprocessor = json.loads((raw_dir / "preprocessor_config.json").read_text())
    (raw_dir / "preprocessor_config.json").write_text(json.dumps({**preprocessor, "do_normalize": False}))
    raw = SSLExtractor(model=str(raw_dir), layers="all", device="cpu")
    assert raw.config.do_normalize is False and raw.fingerprint() != ext.fingerprint()
    assert np.abs(raw.extract_batch([louder])[0] - raw.extract_batch([wave])[0]).max() > 0.01

    (raw_dir / "preprocessor_config.json").unlink()  # no preprocessor config: normalise
    assert SSLExtractor(model=str(raw_dir), device="cpu").config.do_normalize is True


# (h) lazy import -----------------------------------------------------------------------


def test_import_does_not_load_transformers() -> None:
    code = "import featurestore.features, sys; assert 'transformers' not in sys.modules"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)

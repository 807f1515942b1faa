"""``bench/scale_utterances.py`` at its ``--quick`` size: every stage runs in its own process
and reports its figures; the corpus is what it claims. No timing is asserted."""

from __future__ import annotations

import json
import math

import soundfile as sf

from bench import scale_utterances


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_run_measures_every_stage_at_every_size_and_backend(tmp_path, capsys) -> None:
    out = scale_utterances.main(["--quick", "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "all.json")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(out))
    sizes = list(scale_utterances.SIZES["quick"])
    assert out["sizes"] == sizes
    for backend in scale_utterances.BACKENDS:
        for stage in scale_utterances.STAGES:
            assert all(_positive_finite(v) for v in out[f"{stage}_{backend}_s"]), (stage, backend)
            assert all(_positive_finite(v) for v in out[f"{stage}_{backend}_peak_mib"]), (stage, backend)
            assert _positive_finite(out[f"{stage}_{backend}_time_per_utt_ratio"])
            assert _positive_finite(out[f"{stage}_{backend}_cpu_per_utt_ratio"])
            assert isinstance(out[f"{stage}_{backend}_peak_growth_mib"], float)
        assert out[f"bank_{backend}_streaming"] == [False, False]
    for key in (
        "target_time_per_utt_within_1.2x",
        "target_cpu_time_per_utt_within_1.2x",
        "target_memory_growth_under_300_mib",
        "target_resume_under_60_s",
    ):
        assert isinstance(out[key], bool)
    rows = json.loads((tmp_path / "all.json").read_text())["rows"]
    assert [(r["utterances"], r["backend"]) for r in rows] == [(n, b) for n in sizes for b in ("zarr", "hdf5")]
    for row in rows:
        n = row["utterances"]
        assert (row["extract"]["stored"], row["resume"]["stored"], row["resume"]["already_done"]) == (n, 0, n)
        assert row["verify"]["ok"] and row["verify"]["checked"] == n and row["bank"]["entries"] == n
        assert row["extract"]["start_mib"] <= row["extract"]["peak_mib"]
    # corpus, manifests and stores are deleted; the kept --workdir is left empty of them
    assert not any((tmp_path / "work").iterdir())


def test_corpus_files_are_16_khz_wavs_of_1_to_3_seconds_with_cycling_labels(tmp_path) -> None:
    rows = scale_utterances.make_corpus(tmp_path, 20)
    assert len({r["path"] for r in rows}) == 20 and len({r["utt_id"] for r in rows}) == 20
    for row in rows:
        info = sf.info(row["path"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames == round(row["duration"] * 16000) and 1.0 <= row["duration"] <= 3.0
    assert {r["emotion"] for r in rows} == {"neutral", "happy", "angry", "sad"}
    data, _ = sf.read(rows[0]["path"], dtype="int16")
    assert data.std() > 100  # a voice, not silence

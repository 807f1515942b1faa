"""Speaker normalisation: per-speaker statistics from features only, in the bank, the SVM
and the checks before a run."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from featurestore import open_store
from featurestore.errors import ConfigError
from featurestore.manifest import Manifest
from trainer.baseline import utterance_vectors
from trainer.config import TrainConfig
from trainer.cv import StoreSession, plan_run
from trainer.data import FeatureBank
from trainer.speakers import speaker_groups, speaker_normalised_vectors


def test_each_utterance_is_standardised_with_its_speakers_frames(iemocap_mfcc_store) -> None:
    store = open_store(iemocap_mfcc_store)
    bank = FeatureBank(store)
    groups = speaker_groups(store.manifest, store.ids())
    view = bank.speaker_normalised(groups)
    assert view.frames is bank.frames  # a view: the frames are loaded once
    for ids in list(groups.values())[:3]:
        raw = np.concatenate([store.read(u).astype(np.float64) for u in ids])
        mean, std = raw.mean(0), raw.std(0)
        features, lengths = view.batch(ids)
        together = torch.cat([features[i, :n] for i, n in enumerate(lengths)]).double().numpy()
        np.testing.assert_allclose(together, (raw - mean) / std, atol=1e-4)
        np.testing.assert_allclose(together.mean(0), 0, atol=1e-4)
    untouched, _ = bank.batch(store.ids()[:1])
    np.testing.assert_allclose(untouched[0].numpy(), store.read(store.ids()[0]), atol=1e-6)
    mean, _ = view.statistics(store.ids())  # the global statistics of the view are of normalised frames
    np.testing.assert_allclose(mean.numpy(), 0, atol=1e-3)


def test_the_statistics_use_no_labels(iemocap_mfcc_store, tmp_path) -> None:
    """Shuffling the test speakers' labels changes nothing the normalisation gives."""
    store = open_store(iemocap_mfcc_store)
    rows = [dict(store.manifest[u]) for u in store.ids()]
    rng = np.random.default_rng(0)
    shuffled = [{**row, "emotion": str(rng.choice(["angry", "sad"])), "expression": "acted"} for row in rows]
    groups = speaker_groups(store.manifest, store.ids())
    assert groups == speaker_groups(Manifest(shuffled), store.ids())
    vectors = utterance_vectors(store, input_norm="speaker")
    relabelled = speaker_normalised_vectors(utterance_vectors(store), speaker_groups(Manifest(shuffled), store.ids()))
    for utt_id in store.ids():
        np.testing.assert_array_equal(vectors[utt_id], relabelled[utt_id])


def test_svm_vectors_per_speaker_and_the_single_utterance_fallback() -> None:
    rng = np.random.default_rng(1)
    vectors = {f"a{i}": rng.normal(5, 2, 4) for i in range(5)} | {"b0": rng.normal(-3, 1, 4)}
    groups = {"A": [f"a{i}" for i in range(5)], "B": ["b0"]}
    with pytest.warns(UserWarning, match=r"1 speaker\(s\) with a single utterance \(first: B\)"):
        out = speaker_normalised_vectors(vectors, groups)
    block = np.stack([out[u] for u in groups["A"]])
    np.testing.assert_allclose(block.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(block.std(0), 1, atol=1e-12)
    everyone = np.stack(list(vectors.values()))
    np.testing.assert_allclose(out["b0"], (vectors["b0"] - everyone.mean(0)) / everyone.std(0))


def test_a_missing_speaker_is_refused_before_the_run_writes(iemocap_mfcc_store, tmp_path) -> None:
    store = open_store(iemocap_mfcc_store)
    rows = [dict(store.manifest[u]) for u in store.ids()]
    rows[3]["speaker"] = ""
    with pytest.raises(
        ConfigError, match=rf"^--input-norm speaker: 1 utterance\(s\).*\(first: {re.escape(rows[3]['utt_id'])}\)"
    ):
        speaker_groups(Manifest(rows), [r["utt_id"] for r in rows])
    with pytest.raises(ConfigError, match=r"^--input-norm speaker:.*\bno 'talker' column"):
        speaker_groups(store.manifest, store.ids(), column="talker")
    config = TrainConfig.from_dict({"input_norm": "speaker", "epochs": 1, "device": "cpu", "aux": "none"})
    with StoreSession(iemocap_mfcc_store) as session:
        plan = plan_run(session, tmp_path / "run", config)
        assert plan.config.network.input_norm == "speaker" and not (tmp_path / "run").exists()
        assert session.bank("last", "cpu", "speaker") is session.bank("last", "cpu", "speaker")
        assert session.bank("last", "cpu", "speaker") is not session.bank("last", "cpu")


def test_speaker_normalisation_trains_and_predict_normalises_a_call_as_one_speaker(
    iemocap_mfcc_store, tmp_path
) -> None:
    from trainer.cv import run_cv
    from trainer.predict import _speaker_normalise

    config = TrainConfig.from_dict(
        {
            "input_norm": "speaker",
            "epochs": 1,
            "channels": 16,
            "embedding_dim": 8,
            "batch_size": 16,
            "device": "cpu",
            "aux": "none",
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_cv(iemocap_mfcc_store, tmp_path / "run", config, only_folds=[1], progress=False)
    assert results["folds"][0]["fold"] == 1
    parts = [np.random.default_rng(i).normal(3, 2, (n, 5)).astype(np.float32) for i, n in enumerate((30, 50))]
    normalised = np.concatenate(_speaker_normalise(parts))
    np.testing.assert_allclose(normalised.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(normalised.std(0), 1, atol=1e-4)
    with pytest.warns(UserWarning, match="a single recording stand for its speaker"):
        _speaker_normalise(parts[:1])


def test_a_warning_when_speakers_do_not_span_the_classes() -> None:
    from trainer.speakers import warn_if_speakers_do_not_span_the_classes

    rows = [
        {"utt_id": f"u{i}", "path": "/x.wav", "emotion": ["angry", "sad"][i // 4 % 2], "speaker": f"s{i // 4}"}
        for i in range(16)
    ]  # every speaker one emotion, as in URDU
    confounded = Manifest(rows)
    with pytest.warns(UserWarning, match="4 of 4 speakers have utterances of a single emotion only"):
        warn_if_speakers_do_not_span_the_classes(confounded, confounded.ids(), "emotion")
    spanning = Manifest([{**row, "emotion": ["angry", "sad"][i % 2]} for i, row in enumerate(rows)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_speakers_do_not_span_the_classes(spanning, spanning.ids(), "emotion")


def _manifest(emotion_of, speakers: int = 4, each: int = 4) -> Manifest:
    return Manifest(
        [
            {"utt_id": f"u{i}", "path": "/x.wav", "emotion": emotion_of(i), "speaker": f"s{i // each}"}
            for i in range(speakers * each)
        ]
    )


def test_auto_picks_global_where_each_speaker_has_one_class_and_speaker_where_each_has_all() -> None:
    from trainer.speakers import choose_input_norm

    classes = ["angry", "happy", "neutral", "sad"]
    one_each = _manifest(lambda i: classes[i // 4])  # URDU-like: a speaker speaks one emotion
    choice, reason = choose_input_norm(one_each, one_each.ids(), "emotion")
    assert choice == "global" and reason.startswith("only 0 of 4 speakers") and "carry the emotion" in reason
    all_each = _manifest(lambda i: classes[i % 4])  # acted: every speaker speaks every emotion
    assert choose_input_norm(all_each, all_each.ids(), "emotion") == (
        "speaker",
        "4 of 4 speakers have utterances of more than half of the 4 emotion classes",
    )
    # only the training rows' labels count: the same store, trained on one emotion a speaker
    first = [u for u in all_each.ids() if int(u[1:]) % 4 == int(u[1:]) // 4]
    assert choose_input_norm(all_each, first, "emotion")[0] == "global"
    no_speaker = Manifest(
        [{**dict(all_each[u]), "speaker": "" if u == "u3" else all_each[u]["speaker"]} for u in all_each.ids()]
    )
    assert choose_input_norm(no_speaker, no_speaker.ids(), "emotion") == ("global", "1 utterance(s) have no speaker")
    assert choose_input_norm(all_each, all_each.ids(), "emotion", column="talker")[0] == "global"


def test_auto_is_resolved_before_the_run_and_recorded_with_its_reason(iemocap_mfcc_store, tmp_path) -> None:
    from trainer.loop import resolve_config

    config = TrainConfig.from_dict({"epochs": 1, "device": "cpu", "aux": "none"})
    assert config.network.input_norm == "auto"
    with StoreSession(iemocap_mfcc_store) as session:
        manifest = session.store.manifest
        resolved, decisions = resolve_config(config, manifest)
        plan = plan_run(session, tmp_path / "run", config)
        assert plan.config.network.input_norm == resolved.network.input_norm == decisions["input_norm"]["auto"]
        assert plan.identity["decisions"] == decisions and plan.identity["train"]["network"]["input_norm"] != "auto"
        # a store where every speaker speaks every emotion: speaker
        seen: dict[str, int] = {}
        rows = []
        for u in manifest.ids():
            k = seen[manifest[u]["speaker"]] = seen.get(manifest[u]["speaker"], -1) + 1
            rows.append({**dict(manifest[u]), "emotion": ["angry", "happy", "neutral", "sad"][k % 4]})
        spanning = Manifest(rows)
        assert resolve_config(config, spanning)[0].network.input_norm == "speaker"
        # given explicitly, nothing is decided
        explicit = TrainConfig.from_dict({"input_norm": "global", "aux": "none"})
        assert resolve_config(explicit, spanning) == (explicit, {})

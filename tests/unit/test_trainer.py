"""The trainer on real (tiny) stores: schedule, batching, training, CV resume, checkpoints, predict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from featurestore import open_store
from featurestore.errors import ConfigError, RunError, StoreError
from trainer.config import TrainConfig
from trainer.cv import Protocol, run_cv
from trainer.data import FeatureBank, make_batches
from trainer.folds import make_folds
from trainer.loop import infer, load_network, train_fold
from trainer.tasks import alpha_at

TINY = dict(epochs=2, channels=16, embedding_dim=8, batch_size=16, device="cpu")


@pytest.fixture
def mfcc_store(iemocap_mfcc_store) -> Path:
    return iemocap_mfcc_store


def test_alpha_schedule_and_cap() -> None:
    config = TrainConfig()
    assert [round(config.alpha(e), 3) for e in range(10)] == [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.5]
    assert alpha_at(17, 0.1, 0.05, 1.0) == pytest.approx(0.95) and alpha_at(40, 0.1, 0.05, 1.0) == 1.0
    with pytest.raises(ConfigError, match=r"^--alpha-max\b.*got 1\.5$"):
        TrainConfig(alpha_max=1.5)


def test_training_batches_cover_everything_and_bucket_lengths() -> None:
    rng = np.random.default_rng(0)
    ids = [f"u{i}" for i in range(300)]
    lengths = rng.integers(10, 500, size=300)
    batches = make_batches(ids, lengths, 64, rng)
    assert sorted(u for b in batches for u in b) == sorted(ids)
    assert all(len(b) <= 64 for b in batches)
    by_id = dict(zip(ids, lengths))
    spread = np.mean([max(by_id[u] for u in b) - min(by_id[u] for u in b) for b in batches])
    assert spread < 0.5 * (lengths.max() - lengths.min())  # sorted inside pools: little padding
    assert make_batches(ids, lengths, 64, np.random.default_rng(1)) != batches


@pytest.mark.parametrize("count", [17, 33, 65, 1025])
def test_training_batches_never_hold_one_utterance(count: int) -> None:
    """BatchNorm cannot train on one row: a last piece of one joins the batch before it."""
    for seed in range(5):
        batches = make_batches([f"u{i}" for i in range(count)], np.arange(count), 16, np.random.default_rng(seed))
        assert min(map(len, batches)) >= 2 and sum(map(len, batches)) == count


def test_a_non_finite_loss_stops_the_fold_naming_the_epoch(mfcc_store, tmp_path, monkeypatch) -> None:
    import trainer.loop

    real = trainer.loop._train_epoch
    calls = []

    def diverging(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs) if len(calls) < 2 else float("nan")

    monkeypatch.setattr(trainer.loop, "_train_epoch", diverging)
    with pytest.raises(ConfigError, match=r"^fold 1, epoch 2:.*not finite \(nan\).*--lr\b"):
        run_cv(
            mfcc_store, tmp_path / "r", TrainConfig.from_dict(TINY), Protocol("loso", by="session"), [1], progress=False
        )
    kept = sorted(path.name for path in (tmp_path / "r" / "fold_1").iterdir())
    assert kept == ["history.csv"]  # the epochs before the divergence, to look at; the fold is not finished


def test_feature_bank_batches_crops_and_statistics(mfcc_store) -> None:
    store = open_store(mfcc_store)
    bank = FeatureBank(store)
    ids = store.ids()[:5]
    x, lengths = bank.batch(ids)
    assert x.shape == (5, int(lengths.max()), 40) and x.dtype == torch.float32
    for row, utt_id in enumerate(ids):
        np.testing.assert_array_equal(x[row, : lengths[row]].numpy(), store.read(utt_id))
        assert not x[row, lengths[row] :].any()
    cropped, crop_lengths = bank.batch(ids, crop_frames=30, rng=np.random.default_rng(0))
    assert cropped.shape[1] == 30 and (crop_lengths <= 30).all()
    mean, std = bank.statistics(ids)
    frames = np.concatenate([store.read(u) for u in ids]).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), frames.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(std.numpy(), frames.std(0), rtol=1e-4, atol=1e-4)


def test_train_fold_forward_backward_and_checkpoint_round_trip(mfcc_store) -> None:
    store = open_store(mfcc_store)
    bank = FeatureBank(store)
    fold = make_folds(store.manifest, "loso", by="session")[4]
    outcome = train_fold(store, bank, fold, TrainConfig.from_dict(TINY), progress=False)
    metrics = outcome.metrics
    assert 0 <= metrics["wa"] <= 100 and 0 <= metrics["uwa"] <= 100 and metrics["aux_accuracy"] is not None
    assert set(metrics["per_class_recall"]) == {"angry", "happy", "neutral", "sad"}
    assert "expression" in metrics["subsets"] and "emotion" in metrics["separability"]
    assert [h["alpha"] for h in outcome.history] == pytest.approx([0.1, 0.15])
    assert len(outcome.predictions) == len(fold.test)
    network = load_network(outcome.checkpoint)
    again = infer(network, bank, fold.test, 16)["emotion"]
    reference = np.array([[p[f"p_{c}"] for c in outcome.checkpoint["emotions"]] for p in outcome.predictions])
    np.testing.assert_allclose(again, reference, atol=1e-6)


def test_training_learns_and_is_repeatable(mfcc_store) -> None:
    store = open_store(mfcc_store)
    bank = FeatureBank(store)
    fold = make_folds(store.manifest, "loso", by="session")[0]
    config = TrainConfig.from_dict({**TINY, "epochs": 12, "channels": 32, "aux": "none"})
    first = train_fold(store, bank, fold, config, progress=False)
    second = train_fold(store, bank, fold, config, progress=False)
    assert first.metrics["uwa"] == second.metrics["uwa"]
    assert [p["pred"] for p in first.predictions] == [p["pred"] for p in second.predictions]
    losses = [h["train_loss"] for h in first.history]
    assert losses[-1] < 0.7 * losses[0]
    assert first.metrics["uwa"] > 40.0  # 4 classes: chance is 25


def test_cv_writes_run_dir_and_resumes(mfcc_store, tmp_path) -> None:
    out = tmp_path / "run"
    protocol = Protocol("loso", by="session")
    results = run_cv(mfcc_store, out, TrainConfig.from_dict(TINY), protocol, progress=False)
    assert len(results["folds"]) == 5 and {"wa", "uwa", "per_class_recall", "aux_accuracy"} <= set(results)
    assert json.loads((out / "results.json").read_text())["uwa"] == pytest.approx(results["uwa"])
    assert np.mean([f["uwa"] for f in results["folds"]]) == pytest.approx(results["uwa"])
    for k in range(1, 6):
        assert {"metrics.json", "predictions.csv", "history.json", "checkpoint.pt"} <= {
            p.name for p in (out / f"fold_{k}").iterdir()
        }
    kept = (out / "fold_1" / "metrics.json").stat().st_mtime_ns
    (out / "fold_3" / "metrics.json").unlink()
    resumed = run_cv(mfcc_store, out, TrainConfig.from_dict(TINY), protocol, progress=False)
    assert (out / "fold_1" / "metrics.json").stat().st_mtime_ns == kept
    assert (out / "fold_3" / "metrics.json").exists() and len(resumed["folds"]) == 5
    with pytest.raises(RunError, match=rf"{re.escape(str(out))} .*another train\.alpha0\b.*--out\b"):
        run_cv(mfcc_store, out, TrainConfig.from_dict({**TINY, "alpha0": 0.2}), protocol, progress=False)
    # a run directory written before an option existed (and before the network options were
    # nested) resumes with that option at its default
    saved = json.loads((out / "config.json").read_text())
    saved["train"] = {**saved["train"], **saved["train"].pop("network")}
    for option in ("augment", "lr_schedule", "batchnorm", "weight_decay", "dropout", "average_best"):
        del saved["train"][option]
    (out / "config.json").write_text(json.dumps(saved))
    (out / "fold_5" / "metrics.json").unlink()
    assert len(run_cv(mfcc_store, out, TrainConfig.from_dict(TINY), protocol, progress=False)["folds"]) == 5
    with pytest.raises(RunError, match=rf"{re.escape(str(out))} .*another train\.augment\b"):
        run_cv(mfcc_store, out, TrainConfig.from_dict({**TINY, "augment": "specaugment"}), protocol, progress=False)


@pytest.mark.parametrize(
    "config,needle",
    [
        ({"aux": "mood"}, r"^--aux:.*\bno column 'mood'"),
        ({"layer": "3"}, r"^--layer 3:.*\(indices 0\.\.0\)"),
        ({"layer": "weighted"}, r"^--layer weighted\b.*several layers"),
    ],
)
def test_bad_training_input(mfcc_store, tmp_path, config, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        run_cv(
            mfcc_store,
            tmp_path / "r",
            TrainConfig.from_dict({**TINY, **config}),
            Protocol("loso", by="session"),
            [1],
            progress=False,
        )


def test_cv_closes_the_store_after_a_run_and_after_a_refused_one(mfcc_store, tmp_path) -> None:
    import h5py

    from featurestore.store.merge import merge_stores

    path = merge_stores([(mfcc_store, None)], tmp_path / "store.h5")
    protocol = Protocol("loso", by="session")
    run_cv(path, tmp_path / "run", TrainConfig.from_dict({**TINY, "epochs": 1}), protocol, [1], progress=False)
    h5py.File(path, "r+").close()  # h5py refuses while this process still holds the file open read-only
    with pytest.raises(ConfigError, match=rf"^--aux:.*{re.escape(str(path))}.*\bno column 'mood'") as refused:
        run_cv(path, tmp_path / "bad", TrainConfig.from_dict({**TINY, "aux": "mood"}), protocol, [1], progress=False)
    h5py.File(path, "r+").close()  # closed, not merely unreferenced: the traceback still holds the frames
    assert refused.traceback


def test_not_a_store(tmp_path) -> None:
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(StoreError, match=rf"not a feature store\b.*{re.escape(str(tmp_path / 'x.zarr'))}"):
        run_cv(tmp_path / "x.zarr", tmp_path / "r", TrainConfig.from_dict(TINY), progress=False)


def test_svm_baseline_on_utterance_statistics(mfcc_store) -> None:
    from trainer.baseline import svm_cv, utterance_statistics, utterance_vectors

    store = open_store(mfcc_store)
    ids = store.ids()[:3]
    stats = utterance_statistics(store, ids)
    frames = store.read(ids[1]).astype(np.float64)
    np.testing.assert_allclose(stats[1], np.concatenate([frames.mean(0), frames.std(0)]))
    folds = make_folds(store.manifest, "loso", by="session")
    results = svm_cv(store.manifest, utterance_vectors(store), folds)
    assert len(results["folds"]) == 5 and np.mean([f["wa"] for f in results["folds"]]) == pytest.approx(results["wa"])
    assert results["uwa"] > 40.0  # the synthetic emotions differ in pitch and energy: learnable


def test_streaming_bank_trains_exactly_like_the_in_memory_bank(mfcc_store) -> None:
    from trainer.data import StreamingBank, open_bank

    store = open_store(mfcc_store)
    assert not open_bank(store).streaming
    streaming = open_bank(store, budget_bytes=1024)
    assert isinstance(streaming, StreamingBank)
    memory = FeatureBank(store)
    ids = store.ids()[:7]
    for (_, a, la), (_, b, lb) in zip(
        memory.iterate([ids], 25, np.random.default_rng(3)), streaming.iterate([ids], 25, np.random.default_rng(3))
    ):
        assert torch.equal(a, b) and torch.equal(la, lb)
    fold = make_folds(store.manifest, "loso", by="session")[1]
    config = TrainConfig.from_dict(TINY)
    from_memory = train_fold(store, memory, fold, config, progress=False)
    streamed = train_fold(store, streaming, fold, config, progress=False)
    assert [h["train_loss"] for h in streamed.history] == pytest.approx(
        [h["train_loss"] for h in from_memory.history], rel=1e-6
    )
    assert [p["pred"] for p in streamed.predictions] == [p["pred"] for p in from_memory.predictions]


def test_utterance_input_norm_removes_per_utterance_offsets() -> None:
    from trainer.config import NetworkOptions
    from trainer.network import NetworkConfig, SERNetwork

    torch.manual_seed(0)
    x = torch.randn(3, 40, 12)
    lengths = torch.tensor([40, 31, 17])
    offset = torch.randn(3, 1, 12) * 5  # a channel / microphone shift per utterance
    padded = torch.arange(40)[None, :, None] >= lengths[:, None, None]
    shifted = torch.where(padded, x, x + offset)
    for norm, invariant in (("utterance", True), ("global", False)):
        net = SERNetwork(
            NetworkConfig(
                input_size=12, num_emotions=4, options=NetworkOptions(channels=16, embedding_dim=8, input_norm=norm)
            )
        ).eval()
        with torch.no_grad():
            a, b = net(x, lengths)["embedding"], net(shifted, lengths)["embedding"]
        assert torch.allclose(a, b, atol=1e-4) == invariant


def test_balanced_class_weights_match_scikit_learn() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    from trainer.loop import _class_weights

    targets = {f"u{i}": t for i, t in enumerate([0, 0, 0, 0, 1, 2, 2, 3, 3, 3])}
    ours = _class_weights(targets, 4, "balanced", torch.device("cpu")).numpy()
    expected = compute_class_weight("balanced", classes=np.arange(4), y=np.array(list(targets.values())))
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    assert _class_weights(targets, 4, "none", torch.device("cpu")) is None
    with pytest.raises(ConfigError, match=r"^--class-weights\b.*'inverse'"):
        TrainConfig(class_weights="inverse")  # the config refuses it; the trainer is never asked


def test_lr_schedules_and_their_use_in_training(mfcc_store) -> None:
    from trainer.loop import _lr_schedule

    cosine = _lr_schedule("cosine", 4)
    assert [round(cosine(e), 4) for e in range(4)] == [1.0, 0.8536, 0.5, 0.1464]
    assert _lr_schedule("constant", 4)(3) == 1.0
    with pytest.raises(ConfigError, match=r"^--lr-schedule\b.*'step'"):
        TrainConfig(lr_schedule="step")  # the config refuses it; the trainer is never asked
    store = open_store(mfcc_store)
    fold = make_folds(store.manifest, "loso", by="session")[0]
    bank = FeatureBank(store)
    runs = [
        train_fold(store, bank, fold, TrainConfig.from_dict({**TINY, "epochs": 3, "lr_schedule": s}), progress=False)
        for s in ("constant", "cosine")
    ]
    first, later = zip(*[(r.history[0]["train_loss"], r.history[2]["train_loss"]) for r in runs])
    assert first[0] == first[1] and later[0] != later[1]  # epoch 1 runs at the full rate in both


def test_weight_decay_shrinks_the_weights_and_dropout_reaches_the_checkpoint(mfcc_store) -> None:
    store = open_store(mfcc_store)
    fold = make_folds(store.manifest, "loso", by="session")[0]
    bank = FeatureBank(store)
    runs = {
        wd: train_fold(
            store, bank, fold, TrainConfig.from_dict({**TINY, "weight_decay": wd, "dropout": 0.3}), progress=False
        )
        for wd in (0.0, 200.0)
    }
    norm = {
        wd: torch.linalg.vector_norm(run.checkpoint["state_dict"]["encoder.first.conv.weight"])
        for wd, run in runs.items()
    }
    assert norm[200.0] < 0.6 * norm[0.0]  # decoupled decay: every step multiplies the weights by 1 - lr * wd
    assert runs[0.0].checkpoint["network"]["options"]["dropout"] == 0.3
    assert load_network(runs[0.0].checkpoint).encoder.dropout.p == 0.3


def test_best_epochs_keeps_the_top_k_and_averages_their_weights() -> None:
    from trainer.loop import BestEpochs

    selection = BestEpochs(2)
    net = torch.nn.BatchNorm1d(3)
    for epoch, (key, value) in enumerate(
        [((50.0, -1.0), 1.0), ((60.0, -2.0), 2.0), ((60.0, -2.0), 3.0), ((55.0, 0.0), 4.0)], 1
    ):
        net.weight.data.fill_(value)
        net.num_batches_tracked.fill_(epoch)
        selection.offer(key, epoch, net)
    assert selection.epochs == [2, 3] and selection.best == ((60.0, -2.0), 2)  # a tie keeps the earlier epoch first
    averaged = selection.averaged_state()
    torch.testing.assert_close(averaged["weight"], torch.full((3,), 2.5))
    assert int(averaged["num_batches_tracked"]) == 2  # integer buffers come from the best epoch


def test_training_with_average_best_tests_the_mean_of_the_best_epochs(mfcc_store) -> None:
    store = open_store(mfcc_store)
    fold = make_folds(store.manifest, "loso", by="session")[0]
    bank = FeatureBank(store)
    one = train_fold(store, bank, fold, TrainConfig.from_dict({**TINY, "epochs": 4}), progress=False)
    three = train_fold(
        store, bank, fold, TrainConfig.from_dict({**TINY, "epochs": 4, "average_best": 3}), progress=False
    )
    assert one.history == three.history and one.metrics["averaged_epochs"] is None  # same training, other selection
    ranked = sorted(three.history, key=lambda h: (h["valid_uwa"], -h["valid_loss"]), reverse=True)
    assert three.metrics["averaged_epochs"] == sorted(h["epoch"] for h in ranked[:3])
    assert three.metrics["best_epoch"] == one.metrics["best_epoch"] == ranked[0]["epoch"]
    name = "encoder.fc.weight"
    assert not torch.equal(one.checkpoint["state_dict"][name], three.checkpoint["state_dict"][name])
    with pytest.raises(ConfigError, match=r"^--average-best\b.*\[1, inf\), got 0$"):
        train_fold(store, bank, fold, TrainConfig.from_dict({**TINY, "average_best": 0}), progress=False)


def test_precise_batchnorm_averages_the_batches_statistics_and_restores_training_state(mfcc_store) -> None:
    from trainer.config import NetworkOptions
    from trainer.loop import recalibrate_batchnorm
    from trainer.models.augment import SpecAugment
    from trainer.network import NetworkConfig, SERNetwork

    store = open_store(mfcc_store)
    bank = FeatureBank(store)
    ids = store.ids()
    batches = list(bank.iterate(make_batches(ids, bank.lengths(ids), 8, np.random.default_rng(0))))
    network = SERNetwork(
        NetworkConfig(input_size=bank.dim, num_emotions=4, options=NetworkOptions(channels=16, embedding_dim=8))
    )
    network.set_normalisation(*bank.statistics(ids))
    network.augment = augment = SpecAugment()
    norm = network.encoder.first.norm
    norm.running_mean.fill_(5.0)
    seen: list[torch.Tensor] = []
    hook = norm.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].mean(dim=(0, 2))))
    weights = [p.detach().clone() for p in network.parameters()]
    recalibrate_batchnorm(network.eval(), batches)
    hook.remove()
    assert len(seen) == len(batches)
    torch.testing.assert_close(norm.running_mean, torch.stack(seen).mean(dim=0))  # equal-weight average
    assert norm.momentum == 0.1 and network.augment is augment
    assert all(torch.equal(a, b) for a, b in zip(weights, network.parameters()))
    fold = make_folds(store.manifest, "loso", by="session")[0]
    runs = {
        mode: train_fold(store, bank, fold, TrainConfig.from_dict({**TINY, "batchnorm": mode}), progress=False)
        for mode in ("running", "precise")
    }
    assert runs["running"].history[0]["train_loss"] == runs["precise"].history[0]["train_loss"]  # same steps
    assert not torch.equal(
        runs["running"].checkpoint["state_dict"]["encoder.first.norm.running_mean"],
        runs["precise"].checkpoint["state_dict"]["encoder.first.norm.running_mean"],
    )
    with pytest.raises(ConfigError, match=r"^--batchnorm: 'frozen'.*\brunning, precise\b"):
        train_fold(store, bank, fold, TrainConfig.from_dict({**TINY, "batchnorm": "frozen"}), progress=False)


def test_a_test_set_of_one_class_is_scored_without_separability(mfcc_store) -> None:
    from trainer.folds import Fold

    store = open_store(mfcc_store)
    fold = make_folds(store.manifest, "loso", by="session")[0]
    one_class = [u for u in fold.test if store.manifest[u]["emotion"] == "sad"]
    outcome = train_fold(
        store,
        FeatureBank(store),
        Fold(1, fold.train, fold.valid, one_class),
        TrainConfig.from_dict(TINY),
        progress=False,
    )
    assert outcome.metrics["n"] == len(one_class) and "emotion" not in outcome.metrics["separability"]
    assert outcome.metrics["per_class_recall"]["sad"] is not None


def test_label_smoothing_enters_the_emotion_loss(mfcc_store) -> None:
    store = open_store(mfcc_store)
    bank = FeatureBank(store)
    fold = make_folds(store.manifest, "loso", by="session")[0]
    losses = [
        train_fold(
            store,
            bank,
            fold,
            TrainConfig.from_dict({**TINY, "epochs": 1, "aux": "none", "label_smoothing": s}),
            progress=False,
        ).history[0]["train_loss"]
        for s in (0.0, 0.0, 0.5)
    ]
    assert losses[0] == losses[1]  # the same seed: the same loss
    assert abs(losses[2] - losses[0]) > 0.1  # the smoothed target changes the loss the optimiser sees

"""Training batch composition (``--batching``): bucketed keeps padding small, random does not
sort, both are seeded and deterministic, and the trainer uses the configured one."""

from __future__ import annotations

import numpy as np
import pytest

from featurestore.errors import ConfigError
from trainer.config import TrainConfig
from trainer.data import BATCHING, make_batches, padding_fraction

CROP = 150  # 3 s at 50 frames/s


def iemocap_like(count: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Ids and crop lengths of ``count`` utterances with IEMOCAP's lengths (mean 4.5 s), cropped to 3 s."""
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.gamma(shape=2.2, scale=4.5 / 2.2, size=count), 0.6, 34.1)
    return [f"u{i:05d}" for i in range(count)], np.minimum((seconds * 50).astype(int), CROP)


@pytest.mark.parametrize("batching", BATCHING)
@pytest.mark.parametrize("count", [2, 17, 65, 300, 1500])
def test_every_utterance_once_no_batch_of_one_and_the_same_batches_for_a_seed(batching: str, count: int) -> None:
    ids, lengths = iemocap_like(count)
    for seed in range(3):
        batches = make_batches(ids, lengths, 16, np.random.default_rng(seed), batching)
        assert sorted(u for b in batches for u in b) == ids
        assert all(2 <= len(b) <= 17 for b in batches)  # a last one joins the batch before it
        assert make_batches(ids, lengths, 16, np.random.default_rng(seed), batching) == batches
    if count >= 65:
        assert make_batches(ids, lengths, 16, np.random.default_rng(1), batching) != batches


def test_bucketed_keeps_padding_small_and_random_does_not() -> None:
    """The stated bound: on IEMOCAP's lengths with 3 s crops and batches of 64, bucketed
    batches are under 4 % padding (3.2 %: pools of 16 batches); random ones pad the short
    utterances (a third of them) up to the crop, 14.5 %."""
    ids, lengths = iemocap_like(3540)  # the training set of an IEMOCAP leave-one-session-out fold
    by_id = dict(zip(ids, lengths.tolist()))
    bucketed = [padding_fraction(make_batches(ids, lengths, 64, np.random.default_rng(s)), by_id) for s in range(5)]
    random = [
        padding_fraction(make_batches(ids, lengths, 64, np.random.default_rng(s), "random"), by_id) for s in range(5)
    ]
    assert max(bucketed) < 0.04
    assert min(random) > 0.12 and min(random) > 3 * max(bucketed)


def test_random_batches_mix_lengths_and_bucketed_ones_still_change_partners() -> None:
    ids, lengths = iemocap_like(2048)
    by_id = dict(zip(ids, lengths.tolist()))
    random = make_batches(ids, lengths, 64, np.random.default_rng(0), "random")
    spread = np.mean([max(by_id[u] for u in b) - min(by_id[u] for u in b) for b in random])
    assert spread > 0.5 * (lengths.max() - lengths.min())  # not sorted: short and long together
    partners = [
        {frozenset(b) for b in make_batches(ids, lengths, 64, np.random.default_rng(seed))} for seed in range(2)
    ]
    assert not partners[0] & partners[1]  # ties at the crop length are shuffled: no batch repeats


def test_padding_fraction() -> None:
    assert padding_fraction([["a", "b"], ["c"]], {"a": 3, "b": 1, "c": 4}) == pytest.approx(2 / 10)
    assert padding_fraction([], {}) == 0.0
    assert padding_fraction([["a", "b"]], {"a": 5, "b": 5}) == 0.0


def test_an_unknown_batching_is_a_config_error_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--batching: 'sorted' is not one of bucketed, random"):
        make_batches(["a", "b"], [1, 2], 2, np.random.default_rng(0), "sorted")
    with pytest.raises(ConfigError, match=r"--batching"):
        TrainConfig(batching="sorted")
    assert TrainConfig().batching == "bucketed"
    assert TrainConfig.from_dict({"batching": "random"}).batching == "random"


@pytest.mark.parametrize("batching", BATCHING)
def test_the_trainer_batches_as_configured(batching: str, monkeypatch, iemocap_mfcc_store) -> None:
    import trainer.loop
    from featurestore.store import open_store
    from trainer.data import FeatureBank

    seen = []
    real = trainer.loop.make_batches

    def recording(*args, **kwargs):
        batches = real(*args, **kwargs)
        if args[3] is not None:  # training batches (evaluation passes no generator)
            seen.append((args[4] if len(args) > 4 else kwargs.get("batching", "bucketed"), batches))
        return batches

    monkeypatch.setattr(trainer.loop, "make_batches", recording)
    with open_store(iemocap_mfcc_store) as store:
        bank = FeatureBank(store)
        ids = store.ids()
        config = TrainConfig.from_dict({"batching": batching, "batch_size": 4})
        rng = np.random.default_rng(0)
        got = [list(b) for b, _, _ in trainer.loop._training_batches(bank, ids, config, 30, rng)]
    assert seen and seen[0][0] == batching
    crop_lengths = np.minimum(bank.lengths(ids), 30)
    assert got == make_batches(list(ids), crop_lengths, 4, np.random.default_rng(0), batching)


def test_bucketed_batches_are_those_of_earlier_versions() -> None:
    """Runs made before ``--batching`` existed resume with the default: the same batches."""

    def before(ids, lengths, batch_size, rng):  # make_batches as it was, training branch
        order = rng.permutation(len(ids))
        pool, batches = batch_size * 16, []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
            pieces = [[ids[i] for i in chunk[s : s + batch_size]] for s in range(0, len(chunk), batch_size)]
            if len(pieces[-1]) == 1 and (len(pieces) > 1 or batches):
                (pieces[-2] if len(pieces) > 1 else batches[-1]).append(pieces.pop()[0])
            batches += pieces
        return [batches[i] for i in rng.permutation(len(batches))]

    for count, seed in ((65, 0), (1025, 1), (3000, 2)):
        ids, lengths = iemocap_like(count, seed)
        assert make_batches(ids, lengths, 16, np.random.default_rng(seed)) == before(
            ids, lengths, 16, np.random.default_rng(seed)
        )

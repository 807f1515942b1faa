"""SpecAugment masking of the training inputs, alone and inside the trainer."""

from __future__ import annotations

import doctest

import pytest
import torch

from featurestore import open_store
from featurestore.errors import ConfigError
from trainer.config import TrainConfig
from trainer.data import FeatureBank
from trainer.folds import make_folds
from trainer.loop import train_fold
from trainer.models import augment
from trainer.models.augment import SpecAugment

TINY = dict(epochs=2, channels=16, embedding_dim=8, batch_size=16, device="cpu")


def test_masks_whole_bands_and_spans_of_valid_frames_only() -> None:
    torch.manual_seed(0)
    lengths = torch.tensor([200, 120, 37])
    x = torch.randn(3, 200, 40) + 10.0  # no value is zero before masking
    out = SpecAugment(freq_masks=2, freq_width=0.15, time_masks=2, time_fraction=0.1).train()(x, lengths)
    zero = out == 0
    for row, length in enumerate(lengths.tolist()):
        valid = zero[row, :length]
        masked_dims = valid.all(dim=0)  # a frequency band is zero at every valid frame
        masked_frames = valid.all(dim=1)  # a time span is zero in every dimension
        assert (valid == (masked_dims[None, :] | masked_frames[:, None])).all()
        assert masked_dims.sum() <= 2 * (0.15 * 40 + 1)
        assert masked_frames.sum() <= 2 * (0.1 * length + 1)
        assert masked_dims.any() or masked_frames.any()
        assert torch.equal(out[row, :length][~valid], x[row, :length][~valid])
    assert torch.equal(out[2, 37:], x[2, 37:])  # padded frames are left to the network's own mask


def test_eval_mode_and_seed_repeatability() -> None:
    x, lengths = torch.randn(4, 80, 20), torch.tensor([80, 70, 60, 10])
    module = SpecAugment()
    assert module.eval()(x, lengths) is x
    module.train()
    torch.manual_seed(7)
    first = module(x, lengths)
    torch.manual_seed(7)
    assert torch.equal(first, module(x, lengths))
    assert not torch.equal(first, module(x, lengths))


def test_trainer_uses_it_only_when_asked(iemocap_mfcc_store) -> None:
    store = open_store(iemocap_mfcc_store)
    bank = FeatureBank(store)
    fold = make_folds(store.manifest, "loso", by="session")[0]
    plain = train_fold(store, bank, fold, TrainConfig.from_dict(TINY), progress=False)
    augmented = train_fold(store, bank, fold, TrainConfig.from_dict({**TINY, "augment": "specaugment"}), progress=False)
    again = train_fold(store, bank, fold, TrainConfig.from_dict({**TINY, "augment": "specaugment"}), progress=False)
    losses = [[h["train_loss"] for h in outcome.history] for outcome in (plain, augmented, again)]
    assert losses[1] != losses[0] and losses[1] == losses[2]
    assert augmented.checkpoint["state_dict"].keys() == plain.checkpoint["state_dict"].keys()
    with pytest.raises(ConfigError, match=r"^--augment: 'mixup'.*\bnone, specaugment\b"):
        train_fold(store, bank, fold, TrainConfig.from_dict({**TINY, "augment": "mixup"}), progress=False)


def test_doctest() -> None:
    result = doctest.testmod(augment)
    assert result.attempted > 0 and result.failed == 0

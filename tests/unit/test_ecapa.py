"""ECAPA-TDNN and heads: shapes, parameter counts, padding invariance, training, AAM-softmax, layer mix."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainer.models import (
    ECAPATDNN,
    AAMSoftmax,
    AttentiveStatisticsPooling,
    AuxHead,
    LayerWeightedSum,
    SEBlock,
    ecapa,
    frame_mask,
    heads,
)

SMALL = {"channels": 64, "embedding_dim": 16, "se_channels": 16, "attention_channels": 16}


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def expected_parameters(
    input_size: int, channels: int, embedding_dim: int = 192, scale: int = 8, se: int = 128, attention: int = 128
) -> int:
    """The count written out block by block from the architecture description."""

    def tdnn(i: int, o: int, k: int) -> int:  # conv weight + bias, batch-norm weight + bias
        return i * o * k + o + 2 * o

    width = channels // scale
    se_res2 = (
        2 * tdnn(channels, channels, 1)
        + (scale - 1) * tdnn(width, width, 3)
        + channels * se
        + se
        + se * channels
        + channels
    )
    aggregated = 3 * channels
    pooling = tdnn(3 * aggregated, attention, 1) + attention * aggregated + aggregated
    return (
        tdnn(input_size, channels, 5)
        + 3 * se_res2
        + tdnn(aggregated, aggregated, 1)
        + pooling
        + 2 * 2 * aggregated
        + 2 * aggregated * embedding_dim
        + embedding_dim
        + 2 * embedding_dim
    )


def randomise_batch_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so BN(0) != 0 in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator))
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.randn(size, generator=generator))
                module.bias.copy_(torch.randn(size, generator=generator))


def test_reference_shapes() -> None:
    model = ECAPATDNN(input_size=80).eval()
    embedding, pooled = model(torch.randn(5, 120, 80))
    assert embedding.shape == (5, 192) and model.embedding_dim == 192
    assert pooled.shape == (5, 3072) and model.pooled_dim == 3072


@pytest.mark.parametrize("input_size, documented", [(40, 6_092_032), (80, 6_194_432), (1024, 8_611_072)])
def test_reference_parameter_counts_are_the_documented_ones(input_size: int, documented: int) -> None:
    count = trainable(ECAPATDNN(input_size))
    assert count == documented == expected_parameters(input_size, 512)
    assert f"{documented:,}" in ECAPATDNN.__doc__


@pytest.mark.parametrize("input_size, count", [(40, 738_352), (1024, 1_368_112)])
def test_narrow_model_parameter_counts(input_size: int, count: int) -> None:
    assert trainable(ECAPATDNN(input_size, channels=128)) == count == expected_parameters(input_size, 128)


def test_reference_count_is_the_ecapa_papers_six_point_two_million() -> None:
    assert round(trainable(ECAPATDNN(80)) / 1e6, 1) == 6.2


def test_output_of_an_utterance_does_not_depend_on_padding() -> None:
    torch.manual_seed(0)
    model = ECAPATDNN(input_size=80, channels=128)
    randomise_batch_norms(model)
    model.eval()
    short, long = torch.randn(37, 80), torch.randn(400, 80)
    batch = torch.full((2, 400, 80), 5.0)  # padding filled with garbage: the input must be masked too
    batch[0, :37], batch[1] = short, long
    with torch.no_grad():
        together = model(batch, torch.tensor([37, 400]))
        alone_short = model(short[None])
        alone_long = model(long[None], torch.tensor([400]))
    for batched, alone_s, alone_l in zip(together, alone_short, alone_long):
        assert alone_s.abs().max() > 0.1  # a degenerate (all-zero) output would pass trivially
        torch.testing.assert_close(batched[:1], alone_s, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batched[1:], alone_l, atol=1e-4, rtol=1e-4)


def test_pooling_and_squeeze_use_only_valid_frames() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 8, 10)
    padded = torch.cat([x, 100 * torch.randn(1, 8, 6)], dim=-1)
    mask = frame_mask(torch.tensor([10]), 16)
    pool = AttentiveStatisticsPooling(8, 4).eval()
    torch.testing.assert_close(pool(padded, mask), pool(x))
    squeeze = SEBlock(8, 4, 8)
    torch.testing.assert_close(squeeze(padded, mask)[..., :10], squeeze(x))
    assert squeeze(padded, mask)[..., 10:].abs().max() == 0


def test_invalid_lengths_are_refused() -> None:
    model = ECAPATDNN(20, **SMALL).eval()
    for lengths in (torch.tensor([0, 10]), torch.tensor([11, 10]), torch.tensor([10])):
        with pytest.raises(ValueError):
            model(torch.randn(2, 10, 20), lengths)


def test_training_steps_reduce_the_loss_on_a_separable_toy_problem() -> None:
    torch.manual_seed(0)
    labels = torch.arange(16) % 2
    expression = (torch.arange(16) // 2) % 2
    x = torch.randn(16, 30, 20)
    x[:, :, 0] += 3.0 * (2 * labels[:, None] - 1)  # class 1 high, class 0 low in feature 0
    lengths = torch.randint(15, 31, (16,))
    model = ECAPATDNN(20, **SMALL)
    emotion, aux = AAMSoftmax(16, 2), AuxHead(model.pooled_dim, 2)
    parameters = [*model.parameters(), *emotion.parameters(), *aux.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=1e-3)
    losses = []
    for _ in range(8):
        embedding, pooled = model(x, lengths)
        loss = 0.9 * F.cross_entropy(emotion(embedding, labels), labels) + 0.1 * F.cross_entropy(
            aux(pooled), expression
        )
        optimiser.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in parameters)
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    model.eval()
    with torch.no_grad():
        predictions = emotion(model(x, lengths)[0]).argmax(-1)
    assert (predictions == labels).float().mean() >= 0.9


def test_aam_softmax_without_margin_is_scaled_cosine() -> None:
    torch.manual_seed(0)
    head = AAMSoftmax(12, 5, margin=0.0, scale=30.0)
    embedding, labels = torch.randn(7, 12), torch.randint(0, 5, (7,))
    cosine = F.normalize(embedding) @ F.normalize(head.weight).T
    torch.testing.assert_close(head(embedding, labels), 30.0 * cosine)
    torch.testing.assert_close(head(embedding), 30.0 * cosine)


@pytest.mark.parametrize("easy_margin", [False, True])
def test_aam_softmax_margin_lowers_only_the_target_logit(easy_margin: bool) -> None:
    torch.manual_seed(0)
    head = AAMSoftmax(12, 5, margin=0.2, scale=30.0, easy_margin=easy_margin)
    embedding, labels = torch.randn(64, 12), torch.randint(0, 5, (64,))
    plain, trained = head(embedding), head(embedding, labels)
    target = F.one_hot(labels, 5).bool()
    torch.testing.assert_close(trained[~target], plain[~target])
    lowered = trained[target] < plain[target]
    cosine = plain[target] / 30.0
    assert lowered[cosine > 0].all()
    if not easy_margin:
        assert lowered.all()
        angle = torch.acos(cosine)
        small = angle < torch.pi - 0.2  # where cos(θ + m) applies
        torch.testing.assert_close(trained[target][small], 30.0 * torch.cos(angle[small] + 0.2), atol=1e-3, rtol=1e-4)


def test_aam_softmax_fallback_past_pi_and_gradients_flow() -> None:
    head = AAMSoftmax(2, 2, margin=0.5, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # Target class 0 at angle π (cos = -1, θ + m > π) and at angle 0 (cos = 1): both edge cases.
    embedding = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    logits = head(embedding, torch.tensor([0, 0]))
    expected_far = 10.0 * (-1.0 - torch.sin(torch.tensor(torch.pi - 0.5)) * 0.5)
    torch.testing.assert_close(logits[0, 0], expected_far)
    # At cos = 1 exactly the sine floor (sqrt(1e-7)) shifts the logit by s·sin(m)·3e-4 ≈ 1.5e-3.
    torch.testing.assert_close(logits[1, 0], 10.0 * torch.cos(torch.tensor(0.5)), atol=2e-3, rtol=0)
    F.cross_entropy(logits, torch.tensor([0, 0])).backward()
    assert torch.isfinite(embedding.grad).all() and torch.isfinite(head.weight.grad).all()
    assert head.weight.grad.abs().sum() > 0


def test_aux_head_is_one_linear_layer() -> None:
    head = AuxHead(3072, 2)
    assert trainable(head) == 3072 * 2 + 2
    x = torch.randn(4, 3072)
    torch.testing.assert_close(head(x), x @ head.fc.weight.T + head.fc.bias)


def test_layer_weighted_sum_starts_as_the_mean_and_weights_sum_to_one() -> None:
    mix = LayerWeightedSum(5)
    x = torch.randn(2, 5, 7, 3)
    torch.testing.assert_close(mix(x), x.mean(dim=1))
    torch.testing.assert_close(mix.weights(), torch.full((5,), 0.2))
    with torch.no_grad():
        mix.logits.copy_(torch.tensor([3.0, 0.0, -1.0, 0.5, 2.0]))
    weights = mix.weights()
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    torch.testing.assert_close(mix(x), torch.einsum("l,bltf->btf", weights, x))
    mix(x).sum().backward()
    assert mix.logits.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        mix(torch.randn(2, 4, 7, 3))


@pytest.mark.parametrize("module", [ecapa, heads])
def test_doctests(module) -> None:
    result = doctest.testmod(module, extraglobs={"torch": torch, "F": F})
    assert result.attempted > 0 and result.failed == 0
    names = set(re.findall(r"^class (\w+)", Path(module.__file__).read_text(), flags=re.MULTILINE))
    assert names <= set(module.__all__)
    assert all(">>>" in getattr(module, name).__doc__ for name in names)


def test_dropout_acts_on_the_pooled_statistics_in_training_only() -> None:
    torch.manual_seed(0)
    x, lengths = torch.randn(4, 40, 20), torch.tensor([40, 35, 30, 25])
    model = ECAPATDNN(20, **SMALL, dropout=0.5)
    model.train()
    first, pooled = model(x, lengths)
    second, pooled_again = model(x, lengths)
    torch.testing.assert_close(pooled, pooled_again)  # the pooled output itself is not dropped
    assert not torch.allclose(first, second)  # the embedding sees a different mask each pass
    model.eval()
    torch.testing.assert_close(model(x, lengths)[0], model(x, lengths)[0])
    plain = ECAPATDNN(20, **SMALL).train()
    torch.testing.assert_close(plain(x, lengths)[0], plain(x, lengths)[0])

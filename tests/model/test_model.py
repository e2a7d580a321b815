"""MCX-API's head, pair mining and loss against hand computations on small tensors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ffx.errors import FfxError
from ffx.model.mcx_api import (
    MCXAPI,
    ModelConfig,
    PairwiseHead,
    check_backbone,
    load_widened,
    mine_pairs,
    pairwise_loss,
)


def identity_head(features: int = 2, num_classes: int = 2) -> PairwiseHead:
    """A head whose MLP returns x1 (the first half of [x1; x2]) and whose classifier is the identity."""
    head = PairwiseHead(features, num_classes, hidden=features, dropout=0.0)
    with torch.no_grad():
        first, second = head.mutual[0], head.mutual[2]
        first.weight.copy_(torch.cat([torch.eye(features), torch.zeros(features, features)], dim=1))
        first.bias.zero_()
        second.weight.copy_(torch.eye(features))
        second.bias.zero_()
        head.classifier.weight.copy_(torch.eye(num_classes, features))
        head.classifier.bias.zero_()
    return head.eval()


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def hand_attentive(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The identity head's four attentive features by the paper's equations, not by the head:
    xm = first (its MLP passes the first of the pair through), gates sigmoid(xm * x), and
    x_self = x + x * own gate, x_other = x + x * the partner's gate."""
    gate_first, gate_second = torch.sigmoid(first * first), torch.sigmoid(first * second)
    return (
        first + first * gate_first,
        first + first * gate_second,
        second + second * gate_second,
        second + second * gate_first,
    )


def test_gates_and_attentive_features_follow_the_equations() -> None:
    head = identity_head()
    x1, x2 = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 3.0]])
    first_self, first_other, second_self, second_other = head.attentive(x1, x2)
    mutual = [1.0, -2.0]  # the MLP above gives xm = x1
    gate1 = [sigmoid(m * x) for m, x in zip(mutual, [1.0, -2.0])]
    gate2 = [sigmoid(m * x) for m, x in zip(mutual, [0.5, 3.0])]
    expected = {
        "x1_self": [x + x * g for x, g in zip([1.0, -2.0], gate1)],
        "x1_other": [x + x * g for x, g in zip([1.0, -2.0], gate2)],
        "x2_self": [x + x * g for x, g in zip([0.5, 3.0], gate2)],
        "x2_other": [x + x * g for x, g in zip([0.5, 3.0], gate1)],
    }
    for name, value in zip(expected, (first_self, first_other, second_self, second_other)):
        assert value[0].tolist() == pytest.approx(expected[name], abs=1e-6), name


def test_pair_mining_picks_the_true_nearest_neighbours() -> None:
    features = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [0.0, 2.0], [4.0, 0.0], [9.0, 9.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    anchors, intra, inter = mine_pairs(features, labels)
    assert anchors.tolist() == [0, 1, 2, 3, 4, 5]
    assert intra.tolist() == [1, 0, 1, 4, 3, -1]  # image 5 is alone in its class
    assert inter.tolist() == [3, 3, 4, 0, 2, 2]
    _, intra_cosine, _ = mine_pairs(
        torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0, 0]), "cosine"
    )
    assert intra_cosine.tolist() == [1, 0, 1]


def test_loss_is_cross_entropy_of_the_four_plus_the_rank_hinge() -> None:
    head = identity_head()
    features = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    loss, parts = pairwise_loss(head, features, labels, margin=0.05, rank_weight=1.0)
    # Only inter pairs exist (one image per class): pairs (0, 1) and (1, 0).
    cross_entropies, hinges = [], []
    for a, b in ((0, 1), (1, 0)):
        attentive = hand_attentive(features[a : a + 1], features[b : b + 1])
        targets = [labels[a], labels[a], labels[b], labels[b]]
        probabilities = [torch.softmax(x[0], 0)[t].item() for x, t in zip(attentive, targets)]
        cross_entropies += [-math.log(p) for p in probabilities]
        hinges += [  # one hinge per image: its own attention must beat the borrowed one
            max(0.0, probabilities[1] - probabilities[0] + 0.05),
            max(0.0, probabilities[3] - probabilities[2] + 0.05),
        ]
    expected_ce = sum(cross_entropies) / len(cross_entropies)
    expected_rank = sum(hinges) / len(hinges)
    assert parts["cross_entropy"] == pytest.approx(expected_ce, rel=1e-5)
    assert parts["rank"] == pytest.approx(expected_rank, rel=1e-5, abs=1e-7)
    assert loss.item() == pytest.approx(expected_ce + expected_rank, rel=1e-5)
    assert expected_rank > 0  # the hinge is active here, so its sign matters


@pytest.mark.parametrize("margin", [0.03, 0.05, 0.5])
def test_rank_term_is_the_hinge_of_borrowed_over_own_attention(margin: float) -> None:
    """The hinge max(0, p_other(c) - p_self(c) + margin) worked out by hand for the identity head
    (xm = x1 of each pair, logits = features) on a = [2, 0] (class 0) and b = [0, 1] (class 1)."""
    s = sigmoid  # with two logits, p(class 0) = s(z0 - z1)
    # Pair (a, b): xm = a; a's gates s(xm * a) = [s(4), 1/2], b's s(xm * b) = [1/2, 1/2].
    a_self, a_other = s(2 + 2 * s(4)), s(3)  # softmax of [2 + 2 s(4), 0] and [3, 0]
    b_self = b_other = s(1.5)  # b + b * [1/2, 1/2] either way: [0, 1.5]
    # Pair (b, a): xm = b; b's gates [1/2, s(1)], a's [1/2, 1/2].
    b2_self, b2_other = s(1 + s(1)), s(1.5)
    a2_self = a2_other = s(3)
    pairs = [(a_self, a_other), (b_self, b_other), (b2_self, b2_other), (a2_self, a2_other)]
    expected = sum(max(0.0, other - own + margin) for own, other in pairs) / len(pairs)
    head = identity_head()
    features, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    with torch.no_grad():
        _, parts = pairwise_loss(head, features, labels, margin=margin, rank_weight=1.0)
    assert parts["rank"] == pytest.approx(expected, rel=1e-5) and expected > 0
    if margin == 0.03:  # here one hinge is clipped at 0: its own attention wins by more than 0.03
        assert b2_other - b2_self + margin < 0 < a_other - a_self + margin


def test_model_widens_the_first_conv_for_the_colour_spaces(tmp_path: Path) -> None:
    config = ModelConfig(backbone="test_convnext", spaces=("rgb", "ycbcr"), num_classes=3)
    model = MCXAPI(config).eval()
    images = torch.rand(2, 6, 64, 64)
    assert model(images).shape == (2, 3) and model.features(images).shape == (2, model.backbone.num_features)
    rgb_model = MCXAPI(ModelConfig(backbone="test_convnext", spaces=("rgb",))).eval()
    checkpoint = tmp_path / "rgb.pth"
    torch.save(rgb_model.backbone.state_dict(), checkpoint)
    widened = MCXAPI(
        ModelConfig(backbone="test_convnext", spaces=("rgb", "lab")), pretrained=checkpoint
    ).eval()
    rgb = torch.rand(1, 3, 64, 64)
    with torch.no_grad():  # two equal copies through the widened conv equal one copy through the RGB one
        assert torch.allclose(widened.features(torch.cat([rgb, rgb], 1)), rgb_model.features(rgb), atol=1e-5)
    with pytest.raises(FfxError, match="pretrained weights not found"):
        load_widened(widened.backbone, tmp_path / "missing.pth", 6)
    with pytest.raises(FfxError, match="unknown timm backbone"):
        MCXAPI(ModelConfig(backbone="no_such_net"))


def test_timm_is_never_asked_for_pretrained_weights(tmp_path: Path, monkeypatch) -> None:
    """Weights come only from a local --pretrained file: every create_model call has pretrained=False."""
    import timm

    calls, original = [], timm.create_model

    def recording(*args, **kwargs):
        calls.append(kwargs.get("pretrained"))
        return original(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", recording)
    checkpoint = tmp_path / "rgb.pth"
    torch.save(MCXAPI(ModelConfig(backbone="test_convnext")).backbone.state_dict(), checkpoint)
    MCXAPI(ModelConfig(backbone="test_convnext", spaces=("rgb", "hsv")), pretrained=checkpoint)
    MCXAPI(ModelConfig(backbone="resnet18.a1_in1k"))  # a pretrained tag picks a config, offline
    assert calls == [False, False, False]


@pytest.mark.parametrize(
    "name",
    ["hf-hub:timm/resnet18.a1_in1k", "HF_HUB:org/model", "local-dir:/models/x", "timm/resnet18", "a\\b"],
)
def test_backbone_names_timm_would_resolve_elsewhere_are_refused(name: str) -> None:
    with pytest.raises(FfxError, match="never downloads") as raised:
        check_backbone(name)
    assert "\n" not in str(raised.value)
    check_backbone("test_convnext")
    check_backbone("resnet18.a1_in1k")


def test_pretrained_checkpoints_in_their_usual_wrappings_load(tmp_path: Path) -> None:
    """A training script's {"state_dict": ...} with the classifier of the pretraining task, as
    .pth or .safetensors, without BatchNorm counters; the shapes must fit, or one line says which."""
    from safetensors.torch import save_file

    source = MCXAPI(ModelConfig(backbone="resnet18")).backbone
    state = {key: value for key, value in source.state_dict().items() if "num_batches_tracked" not in key}
    state |= {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}  # ImageNet's classifier
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "wrapped.pth")
    save_file(state, str(tmp_path / "plain.safetensors"))
    for name in ("wrapped.pth", "plain.safetensors"):
        model = MCXAPI(ModelConfig(backbone="resnet18", spaces=("rgb", "ycbcr")), pretrained=tmp_path / name)
        assert torch.equal(
            model.backbone.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"]
        )
        assert model.backbone.conv1.weight.shape[1] == 6
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / "reshaped.pth")
    with pytest.raises(
        FfxError, match=r"1 of another shape \(layer1\.0\.conv1\.weight: \[64, 64, 1, 1\], expected"
    ):
        MCXAPI(ModelConfig(backbone="resnet18"), pretrained=tmp_path / "reshaped.pth")


def test_normalisation_values_per_channel_and_the_head_choice() -> None:
    from ffx.model.mcx_api import LinearHead, per_channel

    assert per_channel(0.5, 6) == (0.5,) * 6
    assert per_channel((0.1, 0.2, 0.3), 6) == (0.1, 0.2, 0.3, 0.1, 0.2, 0.3)  # each space's triple
    assert per_channel([0.1] * 9, 9) == (0.1,) * 9
    with pytest.raises(FfxError, match="give one number, three"):
        per_channel((0.1, 0.2), 6)
    with pytest.raises(FfxError, match="must be positive"):
        per_channel(0.0, 3, "std")
    model = MCXAPI(ModelConfig(backbone="test_convnext", spaces=["rgb", "hsv"], head="linear"))
    assert isinstance(model.head, LinearHead) and model.config.spaces == ("rgb", "hsv")
    assert model.config.mean == (0.5,) * 6 and model.config.std == (0.5,) * 6  # no pretrained weights
    assert model.head.classifier.in_features == model.width == 64
    with pytest.raises(FfxError, match="unknown head 'triplet'"):
        ModelConfig(head="triplet")

"""MCX-API: a timm backbone over 3·N colour-space channels with an attentive pairwise interaction head.

Paper: "Multi-Colour-space eXploration with Attentive Pairwise Interaction" (WACVW 2023), whose
head comes from APINet ("Learning Attentive Pairwise Interaction", AAAI 2020). For a pair of
backbone features (x1, x2):

    xm = MLP([x1; x2])                 2D -> 512 -> D (dropout between, as APINet's code)
    g_i = sigmoid(xm * x_i)            one gate per image
    x_i_self  = x_i + x_i * g_i        the image's own attention
    x_i_other = x_i + x_i * g_j        attention borrowed from the other image

One shared linear classifier scores the four attentive features. At inference there is no pair:
the classifier scores the plain backbone feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ffx.errors import FfxError


@dataclass(frozen=True)
class ModelConfig:
    """What shapes the network; saved with every checkpoint."""

    backbone: str = "legacy_xception"
    spaces: tuple[str, ...] = ("rgb",)
    num_classes: int = 2
    hidden: int = 512  # the pair MLP's middle width
    dropout: float = 0.5


class PairwiseHead(nn.Module):
    """Attentive pairwise interaction: gates from a pair's mutual vector, one shared classifier."""

    def __init__(self, features: int, num_classes: int, hidden: int = 512, dropout: float = 0.5):
        super().__init__()
        self.mutual = nn.Sequential(
            nn.Linear(2 * features, hidden), nn.Dropout(dropout), nn.Linear(hidden, features)
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(features, num_classes)

    def attentive(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(x1_self, x1_other, x2_self, x2_other) for pairs of features (B, D) each."""
        mutual = self.mutual(torch.cat([first, second], dim=1))
        gate_first = torch.sigmoid(mutual * first)
        gate_second = torch.sigmoid(mutual * second)
        return (
            first + first * gate_first,
            first + first * gate_second,
            second + second * gate_second,
            second + second * gate_first,
        )

    def score(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features))


class MCXAPI(nn.Module):
    """Backbone (3·N input channels, global pooled features) plus the pairwise head."""

    def __init__(self, config: ModelConfig, pretrained: Path | None = None):
        super().__init__()
        import timm

        self.config = config
        channels = 3 * len(config.spaces)
        try:
            self.backbone = timm.create_model(
                config.backbone, pretrained=False, num_classes=0, in_chans=channels
            )
        except RuntimeError as error:  # timm raises RuntimeError for an unknown model name
            raise FfxError(f"unknown timm backbone {config.backbone!r}: {error}") from None
        if pretrained is not None:
            load_widened(self.backbone, pretrained, channels)
        self.head = PairwiseHead(
            self.backbone.num_features, config.num_classes, config.hidden, config.dropout
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, D) of normalised images (B, 3·N, H, W)."""
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits without a pair (inference)."""
        return self.head.score(self.features(images))


def load_widened(backbone: nn.Module, checkpoint: Path, channels: int) -> None:
    """Load a local RGB timm checkpoint; the first conv's RGB filters are repeated for every colour
    space and scaled by 3 / channels, so a 3·N-channel input of N equal copies gives the RGB output."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FfxError(
            f"pretrained weights not found: {path} (a local timm checkpoint; nothing is downloaded)"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    first_conv = backbone.pretrained_cfg.get("first_conv", "conv1")
    name = f"{first_conv}.weight"
    if name not in state:
        raise FfxError(f"{path} has no {name}: not a checkpoint of this backbone")
    rgb = state[name]
    if rgb.shape[1] != channels:
        repeats = -(-channels // rgb.shape[1])
        state[name] = rgb.repeat(1, repeats, 1, 1)[:, :channels] * (rgb.shape[1] / channels)
    state = {
        key: value for key, value in state.items() if not key.startswith(("fc.", "classifier.", "head."))
    }
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if unexpected or [key for key in missing if not key.startswith(("fc.", "classifier.", "head."))]:
        raise FfxError(
            f"{path} does not fit {type(backbone).__name__}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


# ---------------------------------------------------------------- pairs and loss


def mine_pairs(
    features: torch.Tensor, labels: torch.Tensor, metric: str = "euclidean"
) -> tuple[torch.Tensor, ...]:
    """For every image, its nearest neighbour of the same class (intra) and of another class
    (inter) by feature distance: (first, intra, inter) index tensors; images with no partner of
    a kind are left out of that kind (their partner index is -1)."""
    with torch.no_grad():
        if metric == "euclidean":
            distance = torch.cdist(features.float(), features.float())
        elif metric == "cosine":
            normal = F.normalize(features.float(), dim=1)
            distance = 1 - normal @ normal.T
        else:
            raise FfxError(f"unknown distance {metric!r}; choose euclidean or cosine")
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        far = torch.finfo(distance.dtype).max
        intra_distance = distance.masked_fill(~same | eye, far)
        inter_distance = distance.masked_fill(same, far)
        intra = intra_distance.argmin(dim=1)
        inter = inter_distance.argmin(dim=1)
        intra[intra_distance.gather(1, intra[:, None])[:, 0] == far] = -1
        inter[inter_distance.gather(1, inter[:, None])[:, 0] == far] = -1
    return torch.arange(len(labels), device=labels.device), intra, inter


def pairwise_loss(
    head: PairwiseHead,
    features: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.05,
    rank_weight: float = 1.0,
    metric: str = "euclidean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """MCX-API's training loss on a batch: cross-entropy over the four attentive features of every
    mined pair plus rank_weight * the mean over both images of every pair of
    hinge(p_other(c) - p_self(c) + margin)."""
    anchors, intra, inter = mine_pairs(features, labels, metric)
    firsts = torch.cat([anchors[intra >= 0], anchors[inter >= 0]])
    seconds = torch.cat([intra[intra >= 0], inter[inter >= 0]])
    if len(firsts) == 0:
        raise FfxError("a batch needs two images of one class or two classes to form pairs")
    first_self, first_other, second_self, second_other = head.attentive(features[firsts], features[seconds])
    first_labels, second_labels = labels[firsts], labels[seconds]
    logits = torch.cat([head.score(x) for x in (first_self, first_other, second_self, second_other)])
    targets = torch.cat([first_labels, first_labels, second_labels, second_labels])
    cross_entropy = F.cross_entropy(logits, targets)
    probabilities = F.softmax(logits, dim=1).gather(1, targets[:, None])[:, 0].chunk(4)
    # One hinge per image of every pair, averaged over all of them (APINet's MarginRankingLoss).
    rank = F.relu(
        torch.cat([probabilities[1] - probabilities[0], probabilities[3] - probabilities[2]]) + margin
    ).mean()
    loss = cross_entropy + rank_weight * rank
    return loss, {"cross_entropy": float(cross_entropy.detach()), "rank": float(rank.detach())}

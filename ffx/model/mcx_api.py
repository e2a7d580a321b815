"""MCX-API: a timm backbone over 3·N colour-space channels with an attentive pairwise interaction head.

Paper: "Multi-Colour-space eXploration with Attentive Pairwise Interaction" (WACVW 2023), whose
head comes from APINet ("Learning Attentive Pairwise Interaction", AAAI 2020). For a pair of
backbone features (x1, x2):

    xm = MLP([x1; x2])                 2D -> 512 -> D (dropout between, as APINet's code)
    g_i = sigmoid(xm * x_i)            one gate per image
    x_i_self  = x_i + x_i * g_i        the image's own attention
    x_i_other = x_i + x_i * g_j        attention borrowed from the other image

One shared linear classifier scores the four attentive features. At inference there is no pair:
the classifier scores the plain backbone feature. `head="linear"` is the plain baseline instead
(the paper's Xception, LIB's backbones): a linear classifier on the backbone feature, trained
with cross-entropy alone.

The head is as wide as the feature the backbone really returns: timm's `head_hidden_size` (the
width after `forward_head(pre_logits=True)`, which differs from `num_features` for backbones
with a head conv, such as `mobilenetv3_*` and `ghostnet_*`), else `num_features`.
"""

from __future__ import annotations

import difflib
import pickle
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ffx.errors import FfxError

HEADS = ("pairwise", "linear")
NEUTRAL = 0.5  # mean and std of the input normalisation without pretrained weights


@dataclass(frozen=True)
class ModelConfig:
    """What shapes the network and how its input is normalised; saved with every checkpoint."""

    backbone: str = "legacy_xception"
    spaces: tuple[str, ...] = ("rgb",)
    num_classes: int = 2
    hidden: int = 512  # the pair MLP's middle width
    dropout: float = 0.5
    head: str = "pairwise"  # pairwise (MCX-API) | linear (cross-entropy on the backbone feature)
    # Per input channel, (x / 255 - mean) / std; None: the pretrained backbone's (timm's
    # pretrained_cfg, the RGB triple for every colour space) when weights are loaded, else 0.5.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("spaces", "mean", "std"):  # JSON gives lists
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.head not in HEADS:
            raise FfxError(f"unknown head {self.head!r}; choose {' or '.join(HEADS)}")


def per_channel(values: float | Sequence[float], channels: int, name: str = "mean") -> tuple[float, ...]:
    """A normalisation value for each of `channels` input channels: one value for all, a triple
    for every colour space (3 channels each), or one per channel; anything else is one line."""
    values = (values,) if isinstance(values, int | float) else tuple(values)
    if len(values) == 3 and channels % 3 == 0:
        values = values * (channels // 3)
    elif len(values) == 1:
        values = values * channels
    if len(values) != channels or not all(isinstance(value, int | float) for value in values):
        raise FfxError(
            f"{name} {list(values)}: give one number, three (each colour space's channels) or "
            f"{channels} (one per input channel)"
        )
    if name == "std" and min(values) <= 0:
        raise FfxError(f"std {list(values)}: every value must be positive")
    return tuple(float(value) for value in values)


class LinearHead(nn.Module):
    """The plain classifier of a backbone: logits = W x + b, no pair, no dropout (timm's own)."""

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Linear(features, num_classes)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


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
    """Backbone (3·N input channels, global pooled features) plus the pairwise (or linear) head.
    `config.mean` and `config.std` come out resolved per input channel (see ModelConfig)."""

    def __init__(self, config: ModelConfig, pretrained: Path | None = None):
        super().__init__()
        import timm

        channels = 3 * len(config.spaces)
        check_backbone(config.backbone)  # before timm sees it: nothing may go to the network
        try:
            # Never pretrained=True: weights come only from a local file (`pretrained`).
            self.backbone = timm.create_model(
                config.backbone, pretrained=False, num_classes=0, in_chans=channels
            )
        except (RuntimeError, ValueError) as error:  # e.g. an unknown pretrained tag
            raise FfxError(f"unknown timm backbone {config.backbone!r}: {error}") from None
        if pretrained is not None:
            load_widened(self.backbone, pretrained, channels)
        cfg = getattr(self.backbone, "pretrained_cfg", None) or {}
        weighted = pretrained is not None
        mean = config.mean if config.mean is not None else (cfg.get("mean") if weighted else None)
        std = config.std if config.std is not None else (cfg.get("std") if weighted else None)
        self.config = replace(
            config,
            mean=per_channel(NEUTRAL if mean is None else mean, channels, "mean"),
            std=per_channel(NEUTRAL if std is None else std, channels, "std"),
        )
        self.width = feature_width(self.backbone)
        if config.head == "linear":
            self.head: PairwiseHead | LinearHead = LinearHead(self.width, config.num_classes)
        else:
            self.head = PairwiseHead(self.width, config.num_classes, config.hidden, config.dropout)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, D) of normalised images (B, 3·N, H, W)."""
        features = self.backbone(images)
        if features.ndim != 2 or features.shape[1] != self.width:
            raise FfxError(
                f"backbone {self.config.backbone} returns features of shape {list(features.shape)}, "
                f"not (batch, {self.width}): ffx needs a timm model whose pooled pre-logits "
                "feature is one vector per image"
            )
        return features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits without a pair (inference)."""
        return self.head.score(self.features(images))


def feature_width(backbone: nn.Module) -> int:
    """The width of what a timm model built with num_classes=0 returns: its pre-logits feature
    (`head_hidden_size`, e.g. 1024 for mobilenetv3_small_050, whose `num_features` is 288), else
    `num_features`."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


WEIGHTS_HINT = "pass a timm/torch state dict saved with torch.save(state_dict) or a .safetensors file"


def load_plain(path: Path, what: str, hint: str) -> Any:
    """`torch.load` of plain tensors, numbers and containers only (weights_only: no code runs),
    its pickle warnings hushed; anything else is one line, `{path} is not {what} (...); {hint}`:
    pickled code or objects weights_only refuses, a cut zip archive, a truncated pickle."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError:  # its message is many lines of advice about trusting the file
        raise FfxError(f"{path} is not {what}; {hint}") from None
    except Exception as error:
        reason = str(error).strip().split(". ")[0].splitlines()[0][:120] if str(error).strip() else ""
        raise FfxError(f"{path} is not {what} ({reason or type(error).__name__}); {hint}") from None


def check_backbone(name: str) -> None:
    """A timm registry name (an optional pretrained tag after a dot is fine: with pretrained=False
    it only picks a config), else one line. Hub ids and folders (`hf-hub:org/model`, `hf_hub:`,
    `local-dir:`, `timm/model`) are refused before timm would resolve them over the network."""
    import timm
    from timm.models import split_model_name_tag

    if any(mark in name for mark in ":/\\"):
        raise FfxError(
            f"backbone {name!r} is a Hugging Face Hub id or a folder, which timm would fetch: "
            "ffx never downloads; give a timm model name (e.g. legacy_xception) and the weights "
            "as a local file with --pretrained FILE"
        )
    architecture = split_model_name_tag(name)[0]
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture.lower(), timm.list_models(), n=3)
        hint = f": did you mean {', '.join(close)}?" if close else ""
        raise FfxError(
            f"unknown timm backbone {name!r}{hint} "
            "(python -c 'import timm; print(timm.list_models())' lists them all)"
        )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a local .safetensors file, or a torch.save file read with
    `weights_only=True` (never unpickling code); `{"state_dict": ...}` and `{"model": ...}`
    wrappers are opened. Anything else is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FfxError(
            f"pretrained weights not found: {path} (a local timm checkpoint; nothing is downloaded)"
        )
    if path.stat().st_size == 0:
        raise FfxError(f"{path} is empty: not a weights file; {WEIGHTS_HINT}")
    with open(path, "rb") as handle:
        head = handle.read(9)
    if path.suffix == ".safetensors" or head[8:9] == b"{":  # an 8-byte header length, then JSON
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except SafetensorError as error:
            reason = str(error).removeprefix("Error while deserializing header: ")
            raise FfxError(f"{path} is not a readable .safetensors file ({reason}); {WEIGHTS_HINT}") from None
    else:
        state = load_plain(path, "a plain weights file", WEIGHTS_HINT)
    if isinstance(state, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    tensors = (
        {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
        if isinstance(state, dict)
        else {}
    )
    if not tensors or not all(isinstance(key, str) for key in tensors):
        raise FfxError(
            f"{path} holds no state dict (a dict of parameter names to tensors, "
            f"found {type(state).__name__}); {WEIGHTS_HINT}"
        )
    return tensors


def _examples(keys: list[str], count: int = 2) -> str:
    return ", ".join(keys[:count]) + (", …" if len(keys) > count else "")


def fit_problems(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], optional: tuple[str, ...] = ()
) -> str | None:
    """What keeps `given` from loading into a module whose state dict is `expected`, in a few
    words naming a couple of keys (missing, unexpected, of another shape); None when it fits.
    Missing keys ending in one of `optional` are allowed."""
    missing = [key for key in expected if key not in given and not key.endswith(optional)]
    unexpected = [key for key in given if key not in expected]
    reshaped = [key for key in expected if key in given and given[key].shape != expected[key].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys missing ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_examples(unexpected)})")
    if reshaped:
        key = reshaped[0]
        problems.append(
            f"{len(reshaped)} of another shape ({key}: {list(given[key].shape)}, "
            f"expected {list(expected[key].shape)})"
        )
    return ", ".join(problems) or None


def _cfg_names(value) -> tuple[str, ...]:
    """A pretrained_cfg entry that names one module or several."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def load_widened(backbone: nn.Module, checkpoint: Path, channels: int) -> None:
    """Load a local RGB timm checkpoint; the first conv's RGB filters are repeated for every colour
    space and scaled by 3 / channels, so a 3·N-channel input of N equal copies gives the RGB output.
    The checkpoint's classifier (timm's `pretrained_cfg["classifier"]`) is left out: the backbone
    has none. Every other key must fit, or one line names a couple that do not."""
    path = Path(checkpoint)
    state = read_state_dict(path)
    config = getattr(backbone, "pretrained_cfg", {}) or {}
    expected = backbone.state_dict()
    classifier = tuple(f"{name}." for name in _cfg_names(config.get("classifier")))
    state = {key: value for key, value in state.items() if key in expected or not key.startswith(classifier)}
    for conv in _cfg_names(config.get("first_conv")):
        name = f"{conv}.weight"
        rgb = state.get(name)
        if rgb is not None and rgb.ndim == 4 and name in expected and rgb.shape[1] != channels:
            repeats = -(-channels // rgb.shape[1])
            state[name] = rgb.repeat(1, repeats, 1, 1)[:, :channels] * (rgb.shape[1] / channels)
    problems = fit_problems(expected, state, optional=("num_batches_tracked",))
    if problems:
        architecture = config.get("architecture") or type(backbone).__name__
        raise FfxError(
            f"{path} does not fit the {architecture} backbone: {problems}; "
            f"pass weights of that timm model ({WEIGHTS_HINT.removeprefix('pass ')})"
        )
    backbone.load_state_dict(state, strict=False)


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

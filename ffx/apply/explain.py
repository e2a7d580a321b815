"""`ffx explain`: what a detector looks at, as the MCX-API paper shows it: class activation maps of
the backbone's last stage (Grad-CAM and the variants the paper compares: Grad-CAM++, HiResCAM,
LayerCAM, XGradCAM, through the `grad-cam` package) over the RGB face crop, and a t-SNE of the
backbone's pooled features coloured by class and method.

Samples come from a build's shards (the first N per class of a split, in sample-name order) or from
videos and images as `ffx predict` crops them. Each map explains the fake class the model finds most
likely for that sample (for a binary detector: `fake`), so it shows the evidence for "fake".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ffx.errors import FfxError
from ffx.pipeline.engine import atomic
from ffx.pipeline.media.images import encode_png

METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "xgradcam": "XGradCAM",
}
TSNE_FILE, FEATURES_FILE = "tsne.png", "features.parquet"
PNG_LEVEL = 1  # overlays and sheets: quick to write


@dataclass
class Sample:
    """One crop to explain: the model's uint8 input (spaces stacked, centre-cropped), its RGB view,
    and what is known of it."""

    name: str
    image: torch.Tensor  # uint8 (3, H, W) RGB, centre-cropped as the checkpoint's input
    rgb: np.ndarray  # the same, (H, W, 3)
    label: int | None = None  # None: an input of `ffx predict` (no label)
    label_name: str = ""
    method: str = ""
    video: str = ""
    rank: int = 0  # its place among the samples of its class


@dataclass
class ExplainReport:
    """What `ffx explain` wrote: a folder of overlays per method, one sheet per class, the t-SNE."""

    out: Path
    samples: int = 0
    sheets: list[Path] = field(default_factory=list)
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # sample -> (methods, H, W) in [0, 1]
    tsne: Path | None = None
    features: Path | None = None
    prediction: object = None  # the PredictReport of the inputs, when they were given


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """`gradcam,layercam` -> ("gradcam", "layercam"); unknown names are one line."""
    names = [name.strip().lower() for name in (text.split(",") if isinstance(text, str) else text)]
    names = [name for name in names if name]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise FfxError(
            f"unknown CAM method {','.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}"
        )
    return tuple(dict.fromkeys(names))


def target_layer(model) -> torch.nn.Module:
    """The backbone's last feature stage (timm's `feature_info`), where the maps are taken."""
    info = getattr(model.backbone, "feature_info", None)
    if not info:
        raise FfxError(f"backbone {model.config.backbone} does not name its stages (timm feature_info)")
    last = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
    return model.backbone.get_submodule(last)


def class_maps(
    model,
    samples: list[Sample],
    methods: Sequence[str],
    real: Sequence[int],
    device: torch.device,
    batch_size: int = 16,
) -> dict[str, np.ndarray]:
    """Each sample's maps, (len(methods), H, W) in [0, 1], for the most likely fake class (the
    classes not in `real`). The samples hold RGB: the model's spaces are made on the device,
    the very bytes the loader's host path gives (`ffx.model.colour`)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from ffx.model.checkpoint import model_images

    fake = [index for index in range(model.config.num_classes) if index not in set(real)]
    if not fake:
        raise FfxError("the checkpoint has no fake class to explain")
    maps = {sample.name: np.zeros((len(methods), *sample.rgb.shape[:2]), np.float32) for sample in samples}
    spaces, (mean, std) = model.config.spaces, (model.config.mean, model.config.std)
    for number, method in enumerate(methods):
        cam = getattr(pytorch_grad_cam, METHODS[method])(model=model, target_layers=[target_layer(model)])
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            images = model_images(torch.stack([s.image for s in batch]), device, spaces, "device", mean, std)
            with torch.no_grad():
                logits = model(images)
            targets = [
                ClassifierOutputTarget(max(fake, key=lambda index, row=row: row[index].item()))
                for row in logits
            ]
            for sample, heat in zip(batch, cam(input_tensor=images, targets=targets)):
                maps[sample.name][number] = heat
    return maps


def overlay(rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The map over the crop, as the paper shows it (jet colour map, half and half)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(rgb.astype(np.float32) / 255, heat, use_rgb=True)


def contact_sheet(
    rows: list[tuple[str, np.ndarray, list[np.ndarray]]], methods: Sequence[str], tile: int = 160
) -> np.ndarray:
    """A grid: one row per sample (its crop, then one overlay per method), titled columns and
    each row labelled with its sample name and score."""
    header, label_width = 24, 0
    columns = 1 + len(methods)
    sheet = np.full((header + tile * len(rows), label_width + tile * columns, 3), 255, np.uint8)
    for column, title in enumerate(["crop", *methods]):
        cv2.putText(
            sheet, title, (column * tile + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA
        )
    for row, (caption, rgb, overlays) in enumerate(rows):
        top = header + row * tile
        for column, picture in enumerate([rgb, *overlays]):
            sheet[top : top + tile, column * tile : (column + 1) * tile] = cv2.resize(
                picture, (tile, tile), interpolation=cv2.INTER_AREA
            )
        cv2.putText(
            sheet,
            caption[:24],
            (4, top + tile - 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.38,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return sheet


def write_png(path: Path, rgb: np.ndarray) -> None:
    atomic.write_bytes(path, encode_png(rgb, PNG_LEVEL))


def write_maps(
    out: Path,
    samples: list[Sample],
    maps: dict[str, np.ndarray],
    methods: Sequence[str],
    titles: dict[str, str],
) -> list[Path]:
    """Overlay PNGs (`OUT/cam/{method}/{sample}.png`) and one contact sheet per group of samples
    (`titles`: sample -> group, e.g. its class; `OUT/sheet-{group}.png`)."""
    groups: dict[str, list[tuple[str, np.ndarray, list[np.ndarray]]]] = {}
    for sample in samples:
        overlays = [overlay(sample.rgb, heat) for heat in maps[sample.name]]
        for method, picture in zip(methods, overlays):
            write_png(out / "cam" / method / f"{sample.name}.png", picture)
        groups.setdefault(titles[sample.name], []).append((sample.name, sample.rgb, overlays))
    sheets = []
    for group, rows in groups.items():
        sheets.append(out / f"sheet-{group}.png")
        write_png(sheets[-1], contact_sheet(rows, methods))
    return sheets


def tsne_features(
    model, samples: list[Sample], device: torch.device, out: Path, batch_size: int = 64
) -> tuple[Path, Path]:
    """The backbone's pooled features of every sample as parquet (`features.parquet`: sample,
    video, label, label_name, method, feature, tsne_x, tsne_y) and a t-SNE scatter coloured by
    class and method (`tsne.png`)."""
    from sklearn.manifold import TSNE

    from ffx.model.checkpoint import model_images

    spaces, (mean, std) = model.config.spaces, (model.config.mean, model.config.std)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            batch = torch.stack([sample.image for sample in samples[start : start + batch_size]])
            chunks.append(
                model.features(model_images(batch, device, spaces, "device", mean, std)).float().cpu()
            )
    features = torch.cat(chunks).numpy()
    if len(samples) < 3:
        raise FfxError(f"a t-SNE needs 3 samples or more, got {len(samples)}")
    perplexity = float(min(30, len(samples) - 1))
    points = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(
        features.astype(np.float64)
    )
    table = pa.table(
        {
            "sample": [sample.name for sample in samples],
            "video": [sample.video for sample in samples],
            "label": pa.array([sample.label for sample in samples], pa.int64()),
            "label_name": [sample.label_name for sample in samples],
            "method": [sample.method for sample in samples],
            "feature": pa.array(list(features), pa.list_(pa.float32())),
            "tsne_x": points[:, 0],
            "tsne_y": points[:, 1],
        }
    )
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    atomic.write_bytes(out / FEATURES_FILE, buffer.getvalue().to_pybytes())
    _plot_tsne(out / TSNE_FILE, samples, points)
    return out / TSNE_FILE, out / FEATURES_FILE


def _plot_tsne(path: Path, samples: list[Sample], points: np.ndarray) -> None:
    from ffx.train.evaluate import new_figure, save_figure

    figure, (axis,) = new_figure(1, 6.0, 5.0)
    groups = sorted({(sample.label_name or "?", sample.method or "") for sample in samples})
    for group in groups:
        chosen = [index for index, s in enumerate(samples) if (s.label_name or "?", s.method or "") == group]
        name = group[0] if not group[1] or group[1] == group[0] else f"{group[0]} / {group[1]}"
        axis.scatter(points[chosen, 0], points[chosen, 1], s=10, label=name)
    axis.set_title("t-SNE of backbone features")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=8, markerscale=1.5)
    save_figure(figure, path)


def explain(
    checkpoint: Path,
    out: Path,
    *,
    shards: str | Path | None = None,
    split: str = "test",
    inputs: Sequence[Path] = (),
    per_class: int = 8,
    methods: Sequence[str] = tuple(METHODS),
    tsne_per_class: int = 250,
    device: str = "auto",
    threshold: float = 0.5,
    workers: int | None = None,
    show_progress: bool = True,
    stall_seconds: float = 60.0,
) -> ExplainReport:
    """Maps and a contact sheet per class for the first `per_class` samples of each class of a
    split of `shards` (and the t-SNE of up to `tsne_per_class` per class), or maps and a sheet per
    input for `inputs` (videos, images: cropped and scored by `ffx predict`, whose files also go
    into `out`, the crops into `out/crops`)."""
    from ffx.model.checkpoint import checkpoint_metadata, describe_checkpoint, load_model, place
    from ffx.train.evaluate import checkpoint_classes

    if shards is not None and inputs:
        raise FfxError("ffx explain takes --shards or inputs (videos, images), not both")
    if shards is None and not inputs:
        raise FfxError("ffx explain needs --shards (a build's shards) or inputs (videos, images)")
    methods = parse_methods(methods)
    checkpoint, out = Path(checkpoint), Path(out)
    description = describe_checkpoint(checkpoint)
    placement = place(device)
    model = load_model(checkpoint, placement.device)
    classes = checkpoint_classes(checkpoint_metadata(checkpoint), model.config.num_classes, checkpoint)
    report = ExplainReport(out)
    if shards is not None:
        pool = shard_samples(shards, split, description["crop"], tsne_per_class)
        chosen = [sample for sample in pool if sample.rank < per_class]
        titles = {sample.name: sample.label_name or f"class{sample.label}" for sample in chosen}
    else:
        from ffx.apply.predict import predict

        predicted = predict(
            checkpoint,
            list(inputs),
            out,
            threshold=threshold,
            device=device,
            workers=workers,
            stall_seconds=stall_seconds,
            show_progress=show_progress,
            crops_dir=out / "crops",
        )
        report.prediction = predicted
        chosen = input_samples(predicted, description["crop"], per_class)
        pool, titles = chosen, {sample.name: sample.video for sample in chosen}
    if not chosen:
        raise FfxError("nothing to explain: no face crop among the samples")
    report.maps = class_maps(model, chosen, methods, classes.real, placement.device)
    report.sheets = write_maps(out, chosen, report.maps, methods, titles)
    report.samples = len(chosen)
    if shards is not None and len(pool) >= 3:
        report.tsne, report.features = tsne_features(model, pool, placement.device, out)
    return report


def shard_samples(shards: str | Path, split: str, crop: int | None, per_class: int) -> list[Sample]:
    """Up to `per_class` samples of each class of a split, as RGB centre crops: the first frame
    of each of the class's videos, then the second, ... (`rank` numbers them in that order)."""
    from ffx.data import shard_dataset

    dataset = shard_dataset(shards, split, ("rgb",), crop, train=False, split_nodes=False, colour_on="device")
    by_label: dict[int, list[Sample]] = {}
    for decoded in dataset:
        meta = decoded["meta"]
        image = decoded["image"]
        by_label.setdefault(decoded["label"], []).append(
            Sample(
                decoded["key"],
                image,
                image.permute(1, 2, 0).numpy(),
                decoded["label"],
                str(meta.get("label_name") or ""),
                str(meta.get("method") or ""),
                str(meta.get("video") or ""),
            )
        )
    samples = []
    for label in sorted(by_label):
        # Round robin over the class's videos (each in frame order): a sheet shows many videos.
        seen: dict[str, int] = {}
        for sample in sorted(by_label[label], key=lambda sample: sample.name):
            seen[sample.video] = seen.get(sample.video, -1) + 1
            sample.rank = seen[sample.video]
        ranked = sorted(by_label[label], key=lambda sample: (sample.rank, sample.video, sample.name))[
            :per_class
        ]
        for rank, sample in enumerate(ranked):
            sample.rank = rank
        samples += ranked
    return samples


def input_samples(report, crop: int | None, per_input: int) -> list[Sample]:
    """Up to `per_input` crops of each input of a `ffx predict` report made with `crops_dir`
    (frames evenly spread), as RGB centre crops."""
    from ffx.apply.predict import sample_for
    from ffx.data import decode_sample

    samples = []
    for item in report.inputs:
        crops = [row for row in report.crops if row["input"] == item["input"]]
        picks = sorted({round(index) for index in np.linspace(0, len(crops) - 1, min(per_input, len(crops)))})
        for index in picks if crops else []:
            row = crops[index]
            image = decode_sample(sample_for(row, row["crop"]), ("rgb",), crop)["image"]
            name = f"{row['key']}_{row['frame_index']:04d}"
            samples.append(Sample(name, image, image.permute(1, 2, 0).numpy(), video=row["key"]))
    return samples

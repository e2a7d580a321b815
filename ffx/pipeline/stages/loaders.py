"""Files beside the shards that let other loaders open them: a `wids` index per split and a
Hugging Face dataset card.

- `shards/{split}.wids.json`: the shard index format of `wids` (webdataset's indexed reader,
  `widsindex create` writes the same keys): `__kind__` `wids-shard-index-v1`, `wids_version` 1,
  `name`, and `shardlist` entries `{url, nsamples, filesize}` (plus ffx's `sha256`), `url`
  relative to the JSON's folder, which wids resolves against the folder it loaded the JSON from.
- `shards/README.md`: a dataset card whose YAML front matter (`configs:`) maps the shards to the
  splits `train`, `validation` and `test`, so `datasets.load_dataset(shards_folder)` reads them
  with its `webdataset` builder; its text names each colour space's channel order.

Both come from `shards/index.json` alone, are written atomically and only when their bytes
change (a run with nothing to do writes nothing). `ffx verify` checks them against the index.
"""

from __future__ import annotations

import json
from pathlib import Path

from ffx.pipeline.engine import atomic
from ffx.pipeline.engine.builddir import BuildDir

WIDS_KIND = "wids-shard-index-v1"
CARD = "README.md"
# ffx split -> the split name Hugging Face `datasets` knows (`datasets.Split`).
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}
# What each stored PNG's three channels hold, in order (ffx.pipeline.media.color).
CHANNELS = {
    "rgb": "R, G, B (true RGB, sRGB, 0-255)",
    "lab": "L, a, b: CIELab of sRGB under D65, L*255/100, a+128, b+128, rounded",
    "hsv": "H, S, V: full range, H = degrees*256/360 (not OpenCV's 0-179)",
    "ycbcr": "Y, Cb, Cr: BT.601 full range (JPEG); OpenCV's YCrCb has Cr before Cb",
}


def wids_file(split: str) -> str:
    return f"{split}.wids.json"


def wids_index(index: dict, split: str, name: str) -> dict:
    """The wids shard index of one split, from ffx's shard index."""
    shards = [entry for entry in index["shards"] if entry["split"] == split]
    return {
        "__kind__": WIDS_KIND,
        "wids_version": 1,
        "name": f"{name}-{split}",
        "shardlist": [
            {
                "url": entry["name"],
                "nsamples": entry["samples"],
                "filesize": entry["bytes"],
                "sha256": entry["sha256"],
            }
            for entry in shards
        ],
    }


def dataset_card(index: dict, name: str) -> str:
    """shards/README.md: `configs:` front matter for Hugging Face `datasets`, then the samples."""
    splits = [split for split in HF_SPLITS if index["splits"].get(split, {}).get("samples")]
    front = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        front += [f"  - split: {HF_SPLITS[split]}", f'    path: "{split}-*.tar"']
    front.append("---")
    stored = index["settings"].get("stored", index["settings"]["spaces"])
    counts = ", ".join(
        f"{HF_SPLITS[split]} {index['splits'][split]['samples']} samples in "
        f"{index['splits'][split]['shards']} shards"
        for split in splits
    )
    columns = [f"- `{space}.png`: {CHANNELS[space]}" for space in stored]
    if index["settings"].get("masks"):
        columns.append("- `mask.png`: the face mask (8-bit grey, 255 inside the landmarks' convex hull)")
    floats = (
        ", box, prob, landmarks (the detector's floats, `shard.detector_outputs`)"
        if index["settings"].get("detector_outputs")
        else ""
    )
    text = [
        f"# {name}: face crops in WebDataset shards, written by ffx",
        "",
        f"{counts}. `index.json` lists every shard with its sha256; `{{split}}.wids.json` is the",
        "same list in wids's format.",
        "",
        "Each sample: `cls` (the integer label), `json` (dataset, source, label, label_name, method,",
        f"split, group, video, frame_index, track, crop_box: the integer window cut{floats}) and",
        "one 8-bit PNG per stored colour space, its three channels in this order (a PIL or",
        "`datasets` `Image` calls them R, G, B whatever they hold; OpenCV's `imread` returns them",
        "reversed):",
        "",
        *columns,
        "",
        f"Spaces a run may ask for: {', '.join(index['settings']['spaces'])}; those not stored are",
        "derived exactly from `rgb.png` by ffx's loader (`ffx.data`).",
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_dataset("PATH/TO/shards")  # this card gives the splits',
        "```",
    ]
    return "\n".join(front + text) + "\n"


def dataset_name(build: BuildDir) -> str:
    """The build's recipe name (index.json of the build), else its folder's name."""
    try:
        return json.loads(build.index.read_text(encoding="utf-8"))["dataset"]
    except (OSError, ValueError, KeyError, TypeError):
        return build.root.name


def write_loader_files(build: BuildDir, index: dict) -> None:
    """Write the wids index of every split and the dataset card beside the shards."""
    name = dataset_name(build)
    for split in sorted({entry["split"] for entry in index["shards"]}):
        atomic.write_json(build.shards / wids_file(split), wids_index(index, split, name))
    for stale in build.shards.glob("*.wids.json"):  # a split that no longer has shards
        if stale.name.removesuffix(".wids.json") not in index["splits"]:
            stale.unlink()
    atomic.write_bytes(build.shards / CARD, dataset_card(index, name).encode())


def check_loader_files(build: BuildDir, index: dict) -> list[str]:
    """Problems with the wids indexes and the card, against shards/index.json (empty: all good)."""
    problems = []
    name = dataset_name(build)
    for split in sorted({entry["split"] for entry in index["shards"]}):
        path = build.shards / wids_file(split)
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            problems.append(f"{path.name}: missing or not JSON; run `ffx shard {build.root}`")
            continue
        expected = wids_index(index, split, name)
        if found != expected:
            listed = found.get("shardlist") if isinstance(found, dict) else None
            samples = sum(shard.get("nsamples", 0) for shard in listed or [] if isinstance(shard, dict))
            problems.append(
                f"{path.name}: does not match index.json ({samples} samples listed, index.json has "
                f"{index['splits'][split]['samples']}); run `ffx shard {build.root}`"
            )
    card = build.shards / CARD
    if not card.is_file() or card.read_text(encoding="utf-8") != dataset_card(index, name):
        problems.append(f"{CARD}: missing or not the card of index.json; run `ffx shard {build.root}`")
    return problems


def front_matter(card: Path) -> str:
    """The YAML between the card's first two `---` lines."""
    text = card.read_text(encoding="utf-8")
    _before, _dashes, rest = text.partition("---\n")
    return rest.partition("\n---\n")[0]

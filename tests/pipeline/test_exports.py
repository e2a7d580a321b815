"""Issue 27: exports the downstream readers take exactly as they are written."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from ffx.pipeline.stages.export import run_export
from tests.generated import make_cropped_build


def test_mcx_api_lists_every_split_an_empty_one_too(tmp_path: Path) -> None:
    """MCX-API's train.py opens train.txt and val.txt: each is written, one line per labelled
    crop of the split (counted here from the tables), empty where the split holds none, said."""
    build = make_cropped_build(tmp_path, videos_per_label=1, frames=2, side=16)
    split_of = {row["key"]: row["split"] for row in pq.read_table(build / "videos.parquet").to_pylist()}
    crops = Counter(
        split_of[row["key"]] for row in pq.read_table(build / "faces.parquet").to_pylist() if row["path"]
    )
    report = run_export(build, "mcx-api", tmp_path / "out")
    for split in ("train", "val", "test"):
        lines = (tmp_path / "out" / f"{split}.txt").read_text().splitlines()
        assert len(lines) == crops[split], split
        assert all(
            line.rsplit(" ", 1)[1] in ("0", "1") and Path(line.rsplit(" ", 1)[0]).is_file() for line in lines
        )
        empty = f"{split}.txt is empty: the build's {split} split holds no labelled crop"
        assert (empty in report.notes) == (crops[split] == 0)
    assert 0 in [crops[split] for split in ("train", "val", "test")]  # the case this test is for

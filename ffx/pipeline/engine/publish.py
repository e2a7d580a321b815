"""An item's files appear all at once: written in a hidden temp folder, then renamed into place.

No pyarrow here: worker processes import this cheaply.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def item_temp_dir(root: Path, key: str, tag: str) -> Path:
    """A hidden folder in which one item's files are written before they are published."""
    return root / f".{key}.{tag}.tmp"


def publish_dir(temp: Path | None, root: Path, key: str) -> None:
    """Make `temp` the item's folder `root/key` (replacing an older one), or remove it if None.

    A folder rename is atomic: readers see all of an item's files or none of them."""
    final = root / key
    if final.exists():
        stale = item_temp_dir(root, key, "old")
        final.rename(stale)
        shutil.rmtree(stale)
    if temp is not None:
        temp.rename(final)


def remove_item_temps(root: Path, key: str) -> None:
    """Remove an item's temp folders (keys hold no dots, so `.{key}.` matches no other key)."""
    for temp in root.glob(f".{key}.*.tmp"):
        shutil.rmtree(temp)

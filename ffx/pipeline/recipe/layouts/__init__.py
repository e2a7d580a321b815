"""Dataset layouts behind one registry: each turns a root folder into index entries."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from ffx.errors import ManifestError
from ffx.pipeline.recipe.layouts import celebdf, datalist, dfdc, ffpp, folder
from ffx.pipeline.recipe.layouts.base import Entry, Scan

ScanFunction = Callable[..., Scan]

LAYOUTS: dict[str, ScanFunction] = {
    "ffpp": ffpp.scan,
    "celebdf": celebdf.scan,
    "dfdc": dfdc.scan,
    "mcx-api-datalist": datalist.scan,
    "lib-datalist": datalist.scan,
    "csv": datalist.scan,
    "folder": folder.scan,
}


def get_layout(kind: str) -> ScanFunction:
    """The scan function of a layout; unknown names list the valid ones and the closest."""
    if kind not in LAYOUTS:
        close = difflib.get_close_matches(kind, LAYOUTS, n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ManifestError(f"unknown layout {kind!r}.{hint} Layouts: {', '.join(LAYOUTS)}")
    return LAYOUTS[kind]


__all__ = ["LAYOUTS", "Entry", "Scan", "get_layout"]

"""Dataset layouts behind one registry: each turns a root folder into index entries."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable

from ffx.errors import InputError, ManifestError
from ffx.pipeline.recipe.layouts import celebdf, crops, datalist, dfdc, ffpp, folder
from ffx.pipeline.recipe.layouts.base import Entry, Scan
from ffx.pipeline.recipe.manifest import label_name_problem

ScanFunction = Callable[..., Scan]

LAYOUTS: dict[str, ScanFunction] = {
    "ffpp": ffpp.scan,
    "celebdf": celebdf.scan,
    "dfdc": dfdc.scan,
    "mcx-api-datalist": datalist.scan,
    "lib-datalist": datalist.scan,
    "csv": datalist.scan,
    "folder": folder.scan,
    "crops": crops.scan,
}


def get_layout(kind: str) -> ScanFunction:
    """The scan function of a layout; unknown names list the valid ones and the closest. Its
    label names (the layout's map, and names the entries carry) must be safe folder names."""
    if kind not in LAYOUTS:
        close = difflib.get_close_matches(kind, LAYOUTS, n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ManifestError(f"unknown layout {kind!r}.{hint} Layouts: {', '.join(LAYOUTS)}")
    return _with_safe_label_names(kind, LAYOUTS[kind])


def _with_safe_label_names(kind: str, scan_function: ScanFunction) -> ScanFunction:
    @functools.wraps(scan_function)
    def scan(*args, **kwargs) -> Scan:
        result = scan_function(*args, **kwargs)
        check_label_names(kind, result)
        return result

    return scan


def check_label_names(kind: str, scan: Scan) -> None:
    """A one-line InputError for the first label name that is not a safe folder name: the
    imagefolder export makes a folder of each (the recipe's `labels.names` are checked on load)."""
    for name in scan.label_names:
        if problem := label_name_problem(name):
            raise InputError(f"layout {kind}: {problem}")
    checked: set[str] = set(scan.label_names)
    for entry in scan.entries:
        if entry.label_name is not None and entry.label_name not in checked:
            if problem := label_name_problem(entry.label_name):
                raise InputError(f"{entry.origin or entry.path}: {problem}")
            checked.add(entry.label_name)


__all__ = ["LAYOUTS", "Entry", "Scan", "check_label_names", "get_layout"]

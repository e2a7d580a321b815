"""What `ffx eval` checks between a checkpoint and the data it scores: the recipe of the build the
checkpoint was trained on (in its metadata, `data_recipe`) against the scored build's.

A crop smaller than the model's input is refused in one line (it would be scored on a centre crop
the network never saw, or not at all); every other difference (the crop size, scale or preset,
the detector's thresholds, the frame sampling, the colour spaces, the label mode) is listed in
metrics.json and said as a note: it may be the point of the evaluation (a cross-dataset test),
but it is never silent. Nothing is compared when either recipe is unknown (shards copied out of
their build, a remote URL pattern); the note says so.
"""

from __future__ import annotations

from typing import Any

from ffx.errors import FfxError
from ffx.model.checkpoint import data_recipe

COMPARED = ("sampling", "spaces", "labels")  # besides every crop field


def recipe_differences(trained: dict, scored: dict) -> list[dict[str, Any]]:
    """The recipe fields that differ between the training build and a scored one, each as
    {field, trained, scored}; [] when they agree or either is unknown. Only fields both record
    are compared (a checkpoint written before a field existed says nothing of it), and no crop
    field of a build of imported crops (`ffx import-crops`: its recipe's crop settings are
    defaults, not how its crops were cut)."""
    if not (trained.get("known") and scored.get("known")):
        return []
    differences = []
    for name in COMPARED:
        if name in trained and name in scored and trained[name] != scored[name]:
            differences.append({"field": name, "trained": trained[name], "scored": scored[name]})
    if _imported(trained) or _imported(scored):
        return differences
    crops = trained.get("crop", {}), scored.get("crop", {})
    for name in sorted(set(crops[0]) & set(crops[1])):
        if crops[0].get(name) != crops[1].get(name):
            differences.append(
                {"field": f"crop.{name}", "trained": crops[0].get(name), "scored": crops[1].get(name)}
            )
    return differences


def _imported(recipe: dict) -> bool:
    """Whether a data recipe is that of a build of imported crops (`crops-folders`, ...)."""
    return str(recipe.get("recipe", "")).startswith("crops-")


def check_scored_data(trained: dict, build: str, crop: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The differences between the checkpoint's training recipe and the scored build's, and the
    notes that say them; refuses a build whose crops are smaller than the model's input `crop`."""
    scored = data_recipe(build)
    size = scored.get("crop", {}).get("size") if scored.get("known") and not _imported(scored) else None
    if isinstance(size, int) and size < crop:
        raise FfxError(
            f"{build}: its crops are {size} px, smaller than the {crop} px input (--crop, by default "
            f"the checkpoint's); give --crop {size} or less, or rebuild the shards with crops of at "
            f"least {crop} px (ffx crop --size {crop})"
        )
    if not (trained.get("known") and scored.get("known")):
        why = trained.get("reason") if not trained.get("known") else scored.get("reason")
        return [], [f"{build}: not compared with the data the checkpoint was trained on ({why})"]
    differences = recipe_differences(trained, scored)
    notes = [
        f"{build}: {item['field']} is {item['scored']!r}, the checkpoint was trained on {item['trained']!r}"
        for item in differences
    ]
    return differences, notes

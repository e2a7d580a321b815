"""Recipe defaults that `ffx --help` shows, as plain values: no pydantic, so the help stays cheap."""

from __future__ import annotations

SAMPLING = "first:30"  # the recipe's `sampling`
EXTRACT_BACKENDS = ("pyav", "decord", "opencv")  # `extract.backends`: decoders tried in this order
EXTRACT_PNG_LEVEL = 1  # `extract.png_level`: zlib level of the frame PNGs

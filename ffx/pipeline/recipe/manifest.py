"""Dataset recipes (TOML): a validated schema, recipe lookup, command-line overrides, hashing.

Precedence, lowest first: the recipe file < `--set field.path=value` < named CLI options
(`--sample`, `--seed`, ...). The effective manifest is saved into the build directory.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ffx.errors import ManifestError
from ffx.pipeline.media.color import SPACES
from ffx.pipeline.recipe.defaults import EXTRACT_BACKENDS, EXTRACT_PNG_LEVEL, SAMPLING

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

RECIPES_DIR = Path(__file__).resolve().parents[2] / "manifests"
SAMPLING_PATTERN = re.compile(
    r"^(first:[1-9]\d*|stride:[1-9]\d*:\d+(:[1-9]\d*)?|(dfb-)?linspace:[1-9]\d*|all)$"
)
FFPP_METHODS = (
    "Deepfakes",
    "Face2Face",
    "FaceSwap",
    "NeuralTextures",
    "FaceShifter",
    "DeepFakeDetection",
)


# A label name names a folder (`ffx export --format imagefolder` writes {split}/{label_name}/), so
# it must be one safe path segment: no separators, no `.`/`..`, nothing a shell reads as an option.
LABEL_NAME_PATTERN = re.compile(r"\w[\w.+-]{0,99}")
LABEL_NAME_RULE = "1 to 100 letters, digits and _ . + -, starting with a letter, digit or _"


def label_name_problem(name: object) -> str | None:
    """Why `name` cannot be a label name (it becomes a folder name), or None when it can."""
    if isinstance(name, str) and LABEL_NAME_PATTERN.fullmatch(name):
        return None
    return f"label name {name!r} is not a safe folder name (allowed: {LABEL_NAME_RULE})"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FfppLayout(_Strict):
    """FaceForensics++: original_sequences/ and manipulated_sequences/ under the root."""

    kind: Literal["ffpp"]
    compression: Literal["raw", "c23", "c40"] = "c23"
    methods: tuple[Literal[FFPP_METHODS], ...] = FFPP_METHODS[:4]  # type: ignore[valid-type]
    originals: Literal["youtube", "actors", "both"] = "youtube"


class CelebDfLayout(_Strict):
    """Celeb-DF v1/v2: Celeb-real/, YouTube-real/, Celeb-synthesis/ and the official test list."""

    kind: Literal["celebdf"]
    version: Literal["v1", "v2"] = "v2"
    test_list: str = "List_of_testing_videos.txt"


class DfdcLayout(_Strict):
    """DFDC: dfdc_train_part_*/metadata.json (label, original) beside the videos."""

    kind: Literal["dfdc"]
    parts: str = "dfdc_train_part_*"


class DatalistLayout(_Strict):
    """A list file under the root: MCX-API `path label`, LIB `label,path,nframes` or CSV."""

    kind: Literal["mcx-api-datalist", "lib-datalist", "csv"]
    list_file: str = "datalist.txt"


def safe_label_folders(value: tuple[str, ...]) -> tuple[str, ...]:
    """Label folder names that are safe folder names (a label name becomes one on export)."""
    for name in value:
        if problem := label_name_problem(name):
            raise ValueError(problem)
    return value


class FolderLayout(_Strict):
    """Any folder of videos; top-level folders named after labels (real/, fake/) give labels."""

    kind: Literal["folder"]
    label_folders: tuple[str, ...] = ("real", "fake")  # class index = position
    extensions: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")

    _safe_label_folders = field_validator("label_folders")(safe_label_folders)


class CropsLayout(_Strict):
    """Face crops without their videos (`ffx import-crops`): `folders` of crop images, one folder
    per video under `[split/]label/`, or a DeepfakeBench dataset JSON (`json_file`, under the root)."""

    kind: Literal["crops"]
    format: Literal["folders", "deepfakebench"] = "folders"
    label_folders: tuple[str, ...] = ("real", "fake")  # folders: class index = position
    json_file: str = ""  # deepfakebench: the dataset JSON, relative to the root
    compression: Literal["raw", "c23", "c40"] = "c23"  # deepfakebench: the FF++ family's level
    # deepfakebench: the `resolution` its landmarks are in (its loader's image side; an ffx export's)
    resolution: int = Field(256, ge=8)

    _safe_label_folders = field_validator("label_folders")(safe_label_folders)


Layout = Annotated[
    FfppLayout | CelebDfLayout | DfdcLayout | DatalistLayout | FolderLayout | CropsLayout,
    Field(discriminator="kind"),
]


class Labels(_Strict):
    """How label names map to class indices; `binary` folds every fake class into 1."""

    mode: Literal["methods", "binary"] = "methods"
    names: dict[str, int] | None = None  # replaces the layout's default map when given

    @field_validator("names")
    @classmethod
    def _safe_names(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        for name in value or {}:
            if problem := label_name_problem(name):
                raise ValueError(problem)
        return value


class Split(_Strict):
    """Where splits come from: official files/lists when present, else a seeded group split.

    The seeded split hashes each group's name into train/val/test (stable: adding videos never
    moves the others; fractions hold approximately). `stratify`: `label` pools groups by the
    labels they hold, so every split with a non-zero fraction gets a group of each pool that has
    at least as many groups as such splits (both real and fake, when the data allows); `none`
    pools all groups; `auto` is `label` for `labels.mode = "binary"`, else `none`.
    """

    source: Literal["auto", "official", "seeded"] = "auto"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    stratify: Literal["auto", "label", "none"] = "auto"

    @field_validator("fractions")
    @classmethod
    def _fractions_sum_to_one(cls, value: tuple[float, float, float]):
        if any(f < 0 for f in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError("train, val, test fractions must be >= 0 and sum to 1")
        return value


class Extract(_Strict):
    """How frames are decoded and stored (`ffx extract`); the sampling is the recipe's `sampling`."""

    backends: tuple[Literal["pyav", "decord", "opencv"], ...] = EXTRACT_BACKENDS
    png_level: int = Field(EXTRACT_PNG_LEVEL, ge=0, le=9)
    # Full-frame PNGs under frames/. Unset, the first pass that extracts decides: `ffx extract`
    # stores them (as ever), `ffx build` does not (it crops the frames it decodes and keeps their
    # hashes); that choice is written into the build's recipe, which every later command follows.
    keep_frames: bool | None = None

    @field_validator("backends")
    @classmethod
    def _some_backends(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError("a non-empty list without repeats out of pyav, decord, opencv")
        return value


class Crop(_Strict):
    """Face detection and crops (`ffx crop`)."""

    # aligned: a similarity from MTCNN's five points to ArcFace's template scaled to size / 112.
    preset: Literal["mcx-api", "square-1.3", "aligned"] = "mcx-api"
    size: int = Field(512, ge=32, le=2048)
    scale: float = Field(1.3, ge=1.0, le=4.0)  # square-1.3: box side / longer face side
    min_prob: float = Field(0.99, gt=0.0, le=1.0)
    # A face below min_prob is kept when it continues a track (its overlap with the track's boxes
    # in the frames around it): a subject looking away, in the dark. None: min_prob alone.
    track_min_prob: float | None = Field(None, ge=0.0, le=1.0)
    detect_max_side: int = Field(640, ge=32)
    min_face_ratio: float = Field(0.5, ge=0.0, le=1.0)
    all_faces: bool = False
    boxes_from_original: bool = False
    png_level: int = Field(1, ge=0, le=9)
    # Dense landmarks per face: "none", "dlib68" (the `landmarks` extra's 68-point model) or the
    # path of another dlib shape model (e.g. the 81-point one). At their defaults these two fields
    # stay out of the crops' `made_from`, so builds made before them stay current.
    landmarks: str = Field("none", min_length=1)
    mask: bool = False  # a convex-hull mask of the landmarks beside each crop

    @field_validator("mask")
    @classmethod
    def _mask_needs_landmarks(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("landmarks", "none") == "none":
            raise ValueError("a mask is the hull of the landmarks: set crop.landmarks too (e.g. dlib68)")
        return value

    @field_validator("track_min_prob", mode="before")
    @classmethod
    def _none_spelled_out(cls, value: object) -> object:
        # TOML has no null: "none" is how a recipe or a --set says "no continuations" (the value
        # of builds made before the bundled recipes set it).
        return None if isinstance(value, str) and value.lower() == "none" else value

    @field_validator("track_min_prob")
    @classmethod
    def _below_min_prob(cls, value: float | None, info: ValidationInfo) -> float | None:
        min_prob = info.data.get("min_prob")
        if value is not None and min_prob is not None and value > min_prob:
            raise ValueError(f"{value} is above min_prob {min_prob}")
        return value


class Shard(_Strict):
    """What each sample holds and how samples are laid out in WebDataset shards (`ffx shard`)."""

    max_count: int = Field(10_000, ge=1)
    max_bytes: int = Field(1_000_000_000, ge=1)
    png_level: int = Field(1, ge=0, le=9)
    seed: int = 0  # of the sample order inside a split's shards
    # "all": a PNG per colour space in each sample (what the public MCX-API code reads); "rgb":
    # rgb.png alone, about a quarter of the bytes; ffx's loader derives the other spaces exactly.
    stored_spaces: Literal["all", "rgb"] = "all"
    # samples/ (each video's encoded samples) lets a layout change skip re-encoding; false removes
    # it once the shards are written (a layout change then encodes the samples again).
    keep_samples: bool = True
    # Each sample's JSON carries its integer crop window; the detector's floats (box, probability,
    # landmarks, an aligned crop's matrix) differ in their last digits between CPU kernels (AVX-512
    # or not), so they go into the samples only on request: then shards differ across machines.
    detector_outputs: bool = False


class Manifest(_Strict):
    """A reproducible dataset recipe. The dataset root is given at run time, never here."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    layout: Layout
    sampling: str = SAMPLING
    spaces: tuple[Literal[SPACES], ...] = SPACES  # type: ignore[valid-type]
    labels: Labels = Labels()
    split: Split = Split()
    extract: Extract = Extract()
    crop: Crop = Crop()
    shard: Shard = Shard()
    seed: int = 0
    # The encoder of every PNG the build writes (frames, crops, masks, samples): "libdeflate" (every
    # bundled recipe: about twice as fast and smaller) or "opencv" (libpng and zlib). A recipe that
    # leaves it out gets "opencv", what builds made before the field were written with.
    png_encoder: Literal["libdeflate", "opencv"] = "opencv"

    @field_validator("sampling")
    @classmethod
    def _known_sampling(cls, value: str) -> str:
        if not SAMPLING_PATTERN.match(value):
            raise ValueError(
                "allowed: first:N, stride:S:OFFSET[:MAX], linspace:N, dfb-linspace:N, all "
                f"(e.g. first:30, stride:10:1:301); got {value!r}"
            )
        return value

    @field_validator("spaces")
    @classmethod
    def _unique_spaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"a non-empty list without repeats out of {', '.join(SPACES)}")
        return value

    def digest(self) -> str:
        """sha256 of the canonical JSON form: equal recipes hash equal whatever their TOML layout."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def recipe_names() -> list[str]:
    """Names of the checked-in recipes in manifests/."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.toml"))


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A path to an existing TOML file, or the checked-in recipe of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    recipe = RECIPES_DIR / f"{name_or_path}.toml"
    if recipe.is_file():
        return recipe
    names = recipe_names()
    close = difflib.get_close_matches(str(name_or_path), names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ManifestError(
        f"no manifest file or recipe named {str(name_or_path)!r}.{hint} Recipes: {', '.join(names)}"
    )


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """`field.path=value` -> (["field", "path"], value); the value is read as TOML when it can be."""
    field_path, equals, raw_value = assignment.partition("=")
    if not equals or not field_path.strip():
        raise ManifestError(f"--set expects field.path=value, got {assignment!r}")
    try:
        value = tomllib.loads(f"value = {raw_value}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw_value  # a bare word: keep it as a string
    return field_path.strip().split("."), value


def _apply(data: dict[str, Any], field_path: list[str], value: Any) -> None:
    node = data
    for part in field_path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ManifestError(f"--set {'.'.join(field_path)}: {part!r} is not a table")
    node[field_path[-1]] = value


def _format_errors(source: str, error: ValidationError, given: dict[str, str]) -> str:
    """One line per problem, each blamed on where the value came from: a `--set`, an option, or
    the recipe file."""
    lines = []
    for item in error.errors():
        parts = [str(part) for part in item["loc"]]
        location = ".".join(parts) or "(top level)"
        # A tagged union puts its tag in the location (`layout.folder.label_folders` for the
        # `--set layout.label_folders=…`): the field's path is the location with one part left out.
        paths = [location] + [".".join(parts[:i] + parts[i + 1 :]) for i in range(1, len(parts))]
        origin = next(
            (
                given[name]
                for name in sorted(given, key=len, reverse=True)
                if any(f"{path}.".startswith(f"{name}.") for path in paths)
            ),
            source,
        )
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field (not allowed)"
        elif item["type"] == "literal_error":
            message = f"{message}; got {item.get('input')!r}"
        lines.append(f"{origin}: {location}: {message}")
    return "; ".join(lines)


def png_encoder_setting(recipe: Manifest) -> dict[str, str]:
    """`png_encoder` as a stage's settings digest holds it: absent at "opencv", so the items of
    builds made before the field keep their `made_from`."""
    return {} if recipe.png_encoder == "opencv" else {"png_encoder": recipe.png_encoder}


def load_manifest(
    name_or_path: str | Path,
    overrides: dict[str, Any] | None = None,
    assignments: list[str] | None = None,
) -> Manifest:
    """Read and validate a recipe, applying `--set` assignments, then named overrides."""
    path = resolve_recipe_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ManifestError(f"{path}: not valid TOML: {error}") from None
    given: dict[str, str] = {}
    for assignment in assignments or []:
        field_path, value = parse_override(assignment)
        _apply(data, field_path, value)
        given[".".join(field_path)] = f"--set {assignment}"
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _apply(data, dotted.split("."), value)
            given[dotted] = f"the option for {dotted} ({value!r})"
    try:
        return Manifest.model_validate(data)
    except ValidationError as error:
        raise ManifestError(_format_errors(str(path), error, given)) from None


def manifest_fields(manifest: Manifest) -> dict[str, Any]:
    """Every field of a recipe by dotted name (`crop.size`), values in JSON form; `description`
    is left out (it shapes nothing)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and not (prefix.endswith("names") and prefix.startswith("labels")):
            for name, item in value.items():
                walk(f"{prefix}.{name}" if prefix else name, item)
        else:
            flat[prefix] = value

    walk("", manifest.model_dump(mode="json"))
    flat.pop("description", None)
    return flat


def inherit_unset(manifest: Manifest, built: Manifest) -> Manifest:
    """`manifest` with the fields it leaves to the build taken from the build's recipe: an unset
    `extract.keep_frames` (decided by the build's first extract pass)."""
    if manifest.extract.keep_frames is not None or built.extract.keep_frames is None:
        return manifest
    extract = manifest.extract.model_copy(update={"keep_frames": built.extract.keep_frames})
    return manifest.model_copy(update={"extract": extract})


def manifest_changes(old: Manifest, new: Manifest) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) of every field that differs, in field order."""
    before, after = manifest_fields(old), manifest_fields(new)
    return [(name, before.get(name), value) for name, value in after.items() if before.get(name) != value]


def set_option(field: str, value: Any) -> str:
    """The `--set` that gives `field` this value."""
    return "--set " + shlex.quote(f"{field}={_toml_value(value)}")


def manifest_to_toml(manifest: Manifest) -> str:
    """Serialise a manifest as TOML (the effective recipe saved into a build directory)."""
    data = manifest.model_dump(mode="json", exclude_none=True)
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines = [f"{key} = {_toml_value(value)}" for key, value in scalars.items()]
    for table, fields in tables.items():
        lines.append(f"\n[{table}]")
        for key, value in fields.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if value is None:  # an optional field left unset (`crop.track_min_prob`): TOML has no null
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")

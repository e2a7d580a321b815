"""Recipes: every checked-in one validates; errors name the file, the field and what is allowed."""

from __future__ import annotations

import shlex

import pytest

from ffx.errors import ManifestError
from ffx.pipeline.recipe.manifest import (
    Manifest,
    load_manifest,
    manifest_changes,
    manifest_to_toml,
    recipe_names,
    set_option,
    tomllib,
)

REQUIRED_RECIPES = {"ffpp-c23", "ffpp-c40", "celebdf-v2", "dfdc", "mcx-api-datalist", "folder", "demo"}


def test_checked_in_recipes_validate_and_round_trip():
    assert set(recipe_names()) >= REQUIRED_RECIPES
    for name in recipe_names():
        manifest = load_manifest(name)
        assert manifest.name == name
        again = Manifest.model_validate(tomllib.loads(manifest_to_toml(manifest)))
        assert again == manifest and again.digest() == manifest.digest()


def test_defaults_are_the_papers():
    manifest = load_manifest("ffpp-c23")
    assert manifest.sampling == "first:30"
    assert manifest.spaces == ("rgb", "lab", "hsv", "ycbcr")
    assert (manifest.crop.preset, manifest.crop.size, manifest.crop.min_prob) == ("mcx-api", 512, 0.99)


def test_overrides_and_precedence():
    manifest = load_manifest("ffpp-c23", {"sampling": "stride:10:1:301"}, ["sampling=linspace:32", "seed=5"])
    assert manifest.sampling == "stride:10:1:301"  # named options beat --set
    assert manifest.seed == 5
    assert manifest.digest() != load_manifest("ffpp-c23").digest()
    assert load_manifest("ffpp-c23", assignments=["layout.compression=c40"]).layout.compression == "c40"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nlayout = { kind = "folder" }\ncolour = 1\n', r"bad.toml: colour: unknown field"),
        (
            'name = "x"\nlayout = { kind = "folder", depth = 2 }\n',
            r"bad.toml: layout.folder.depth: unknown field",
        ),
        ('name = "x"\nlayout = { kind = "nope" }\n', r"bad.toml: layout: .*'ffpp'"),
        (
            'name = "x"\nlayout = { kind = "folder" }\nsampling = "every:3"\n',
            r"bad.toml: sampling: .*first:N",
        ),
        (
            'name = "x"\nlayout = { kind = "folder" }\nspaces = ["rgb", "xyz"]\n',
            r"bad.toml: spaces.1: .*'lab'",
        ),
        (
            'name = "x"\nlayout = { kind = "ffpp", compression = "c99" }\n',
            r"bad.toml: layout.ffpp.compression: .*'c23'.*got 'c99'",
        ),
        ('name = "x"\nlayout = { kind = "folder" }\nsplit = { fractions = [0.5, 0.5, 0.5] }\n', "sum to 1"),
        (
            'name = "x"\nlayout = { kind = "folder" }\nlabels = { names = { real = 0, "../../../X" = 1 } }\n',
            r"bad.toml: labels.names: .*'\.\./\.\./\.\./X' is not a safe folder name \(allowed: ",
        ),
        ("name = [\n", r"bad.toml: not valid TOML"),
    ],
)
def test_validation_errors_name_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ManifestError, match=message):
        load_manifest(path)


def test_unknown_recipe_suggests_close_names():
    with pytest.raises(ManifestError, match="Did you mean ffpp-c23"):
        load_manifest("ffpp-c32")
    with pytest.raises(ManifestError, match=r"--set expects field\.path=value"):
        load_manifest("demo", assignments=["seed"])


def test_a_build_made_before_the_recipes_set_a_field_is_told_the_sets_that_keep_it() -> None:
    """A build made before the bundled recipes set png_encoder = "libdeflate" and crop.track_min_prob
    (none, which TOML cannot write as a null) is told the --set that keeps each."""
    older = load_manifest("ffpp-c23", assignments=['png_encoder="opencv"', 'crop.track_min_prob="none"'])
    assert older.crop.track_min_prob is None
    changes = manifest_changes(older, load_manifest("ffpp-c23"))
    assert sorted(field for field, _, _ in changes) == ["crop.track_min_prob", "png_encoder"]
    sets = [shlex.split(set_option(field, built))[1] for field, built, _ in changes]
    assert sorted(sets) == ['crop.track_min_prob="none"', 'png_encoder="opencv"']
    assert manifest_changes(older, load_manifest("ffpp-c23", assignments=sets)) == []
    saved = tomllib.loads(manifest_to_toml(older))  # and as a build's manifest.toml keeps it
    assert Manifest.model_validate(saved).crop.track_min_prob is None
    del saved["png_encoder"]  # the manifest.toml of a build made before the field: written by opencv
    assert Manifest.model_validate(saved).png_encoder == "opencv"

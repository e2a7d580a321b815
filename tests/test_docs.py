"""The docs: a short README that points into the site, and a site that builds under `--strict` (a
broken link or anchor, a page left out of the nav, a command without help text, a page naming the
project's own media folder: each fails the build, see scripts/mkdocs_hooks.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ffx.cli import app
from tests.conftest import REPO as ROOT

README = ROOT / "README.md"


def test_the_readme_is_short_and_names_nothing_users_lack() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "../shared" not in text
    for target in re.findall(r"\]\((docs/[^)#]+)", text):  # every page it links to exists
        assert (ROOT / target).is_file(), target


def _build(tmp_path: Path, docs: Path) -> subprocess.CompletedProcess:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    config = config.replace("docs_dir: docs", f"docs_dir: {docs}")
    config = config.replace("scripts/mkdocs_hooks.py", str(ROOT / "scripts" / "mkdocs_hooks.py"))
    (tmp_path / "mkdocs.yml").write_text(config, encoding="utf-8")
    # Not --quiet: it hides the warnings, and --strict then has none to fail on.
    mkdocs = [sys.executable, "-m", "mkdocs", "build", "--strict"]
    quiet = {"NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(mkdocs, cwd=tmp_path, capture_output=True, text=True, env=quiet)


def test_the_site_builds_strict_with_the_cli_reference(tmp_path: Path) -> None:
    done = _build(tmp_path, ROOT / "docs")
    assert done.returncode == 0, done.stderr
    cli_page = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    import typer

    for name in typer.main.get_command(app).commands:
        assert f"ffx {name}</code>" in cli_page, name


@pytest.mark.parametrize(
    ("page", "change", "said"),
    [
        ("building.md", "\nSee [the recipes](recipez.md).\n", "recipez.md"),
        ("recipes.md", "\nThe clips live in ../shared/media.\n", "names ../shared"),
        ("interop.md", "\nSee [layouts](recipes.md#no-such-heading).\n", "no-such-heading"),
    ],
)
def test_a_broken_link_or_a_private_path_fails_the_build(tmp_path: Path, page: str, change: str, said: str):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    with open(docs / page, "a", encoding="utf-8") as text:
        text.write(change)
    done = _build(tmp_path, docs)
    assert done.returncode != 0
    assert said in done.stderr + done.stdout

"""MkDocs hooks of the docs site (`mkdocs.yml`): the CLI reference is generated from the typer app,
and the build fails (under `mkdocs build --strict`, as in `.ci/run`) when a command or option has no
help text, when a command is named on no guide page, or when a page other than the development
page names the project's own media folder, which users do not have."""

from __future__ import annotations

import re

from mkdocs.exceptions import PluginError

CLI_MARKER = "<!-- ffx-cli-reference -->"
DEVELOPMENT_PAGE = "development.md"
PRIVATE_PATH = re.compile(r"\.\./shared\b")
COMMAND = re.compile(r"\bffx ([a-z][a-z-]*)")
_named: set[str] = set()


def on_pre_build(config) -> None:
    _named.clear()


def on_page_markdown(markdown: str, page, config, files) -> str:
    path = page.file.src_uri
    if path != DEVELOPMENT_PAGE and PRIVATE_PATH.search(markdown):
        raise PluginError(f"{path} names ../shared, which users do not have; only {DEVELOPMENT_PAGE} may")
    if CLI_MARKER not in markdown:
        _named.update(COMMAND.findall(markdown))
        return markdown
    from ffx.cli import app
    from ffx.cli.reference import cli_reference, undocumented

    missing = undocumented(app)
    if missing:
        raise PluginError(f"no help text for: {', '.join(missing)}; give each a help= or a docstring")
    return markdown.replace(CLI_MARKER, cli_reference(app))


def on_post_build(config) -> None:
    import typer

    from ffx.cli import app

    unnamed = sorted(set(typer.main.get_command(app).commands) - _named)
    if unnamed:
        raise PluginError(f"commands no guide page names: {', '.join(unnamed)}; document them under docs/")

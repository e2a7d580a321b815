"""The CLI reference: every `ffx` command with its usage, arguments and options, as Markdown."""

# Read off the typer app itself, so the docs site's reference page (docs/reference/cli.md, filled in
# by scripts/mkdocs_hooks.py) cannot drift from `ffx --help`; a command or option without a help
# text is listed by `undocumented` and fails the docs build.

from __future__ import annotations

import typer


def _commands(app: typer.Typer) -> dict:
    return typer.main.get_command(app).commands


def undocumented(app: typer.Typer) -> list[str]:
    """`ffx NAME` (or `ffx NAME --option`) for each command and visible option without a help text."""
    missing = []
    for name, command in _commands(app).items():
        if not (command.help or "").strip():
            missing.append(f"ffx {name}")
        missing += [
            f"ffx {name} {param.opts[0]}"
            for param in command.params
            if not getattr(param, "hidden", False) and not (getattr(param, "help", None) or "").strip()
        ]
    return missing


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(param) -> str:
    if param.param_type_name == "argument":
        return "required" if param.required else ""
    if param.required:
        return "required"
    value = param.default
    if value is None:  # unset: the recipe or the config decides, as the help text says
        return ""
    if param.is_flag and param.secondary_opts:  # --x/--no-x: say which side is on
        return param.opts[0] if value else param.secondary_opts[0]
    if value == () or value is False or callable(value):
        return ""
    return f"`{value}`"


def _param_row(param) -> str:
    if param.param_type_name == "argument":
        names = f"`{param.name.upper()}`"
    else:
        names = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
    return f"| {names} | {_cell(getattr(param, 'help', '') or '')} | {_cell(_default(param))} |"


def command_section(name: str, command) -> str:
    """The Markdown section of one command: its help text, usage and parameter table."""
    params = [param for param in command.params if not getattr(param, "hidden", False)]
    usage = " ".join(
        [f"ffx {name}"]
        + [param.name.upper() for param in params if param.param_type_name == "argument"]
        + ["[OPTIONS]"]
    )
    lines = [f"## `ffx {name}`", "", (command.help or "").strip(), "", "```", usage, "```", ""]
    if params:
        lines += ["| argument or option | what it does | default |", "| --- | --- | --- |"]
        lines += [_param_row(param) for param in params]
        lines.append("")
    return "\n".join(lines)


def cli_reference(app: typer.Typer) -> str:
    """Every command of `app`, in `ffx --help` order, as Markdown sections."""
    return "\n".join(command_section(name, command) for name, command in _commands(app).items())

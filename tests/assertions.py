"""Assertions the tests share: an error told in one line, never a traceback."""

from __future__ import annotations


def help_text(*command: str) -> str:
    """What `ffx COMMAND --help` prints, in a terminal wide enough that no option wraps."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "ffx.cli", *command, "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "300"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def error_line(text: str) -> str:
    """The one line of an error output (stderr of the CLI or of a subprocess), no traceback."""
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def one_error_line(capture) -> str:
    """The one line on stderr so far (capsys, or capfd: OpenCV and loader workers write at the
    descriptor), no traceback."""
    return error_line(capture.readouterr().err)


def fails_in_one_line(arguments: list[str], capture) -> str:
    """`ffx ARGUMENTS` exits 1 with a single `ffx: error:` line on stderr: that line."""
    from ffx.cli import main

    assert main(arguments) == 1
    line = one_error_line(capture)
    assert line.startswith("ffx: error:"), line
    return line

"""`python -m ffx.cli`: the same as the `ffx` command."""

from ffx.cli import entry

if __name__ == "__main__":  # pragma: no cover
    entry()

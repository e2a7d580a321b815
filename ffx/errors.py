"""One error boundary: every user-facing failure is an FfxError whose message says how to fix it."""

from __future__ import annotations


class FfxError(Exception):
    """A problem the user must act on; the CLI prints it as one line and exits non-zero."""

    exit_code = 1


class ManifestError(FfxError):
    """A recipe that is missing, malformed or names a field or value that is not allowed."""


class InputError(FfxError):
    """Bad dataset input: missing root or file, malformed list line, unknown label, and so on."""


class BuildError(FfxError):
    """A build directory that lacks a table a stage needs, or holds inconsistent tables."""

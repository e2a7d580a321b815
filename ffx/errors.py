"""One error boundary: every user-facing failure is an FfxError whose message says how to fix it."""

from __future__ import annotations

import errno


class FfxError(Exception):
    """A problem the user must act on; the CLI prints it as one line and exits non-zero."""

    exit_code = 1


class ManifestError(FfxError):
    """A recipe that is missing, malformed or names a field or value that is not allowed."""


class InputError(FfxError):
    """Bad dataset input: missing root or file, malformed list line, unknown label, and so on."""


class BuildError(FfxError):
    """A build directory that lacks a table a stage needs, or holds inconsistent tables."""


class OutputError(BuildError):
    """An output that could not be written: disk full, quota, read-only or forbidden folder."""


# errno -> what the user does about it
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def os_error_line(error: OSError) -> str:
    """One line for a failed file operation: the file, what the system said, what to do."""
    where = error.filename or "a file"
    reason = error.strerror or type(error).__name__
    if error.errno in _FULL:
        hint = (
            "free space (or use a build folder on a larger disk) and run the same command again; "
            "finished items are kept"
        )
    elif error.errno in _NOT_WRITABLE:
        hint = "make it writable (or copy the build to a folder you can write) and run the same command again"
    elif error.errno == errno.ENOENT:
        hint = "a folder on its path does not exist (or was removed while ffx ran): check the path"
    elif error.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        hint = "a file stands where a folder is needed, or a folder where a file is: give another path"
    else:
        hint = "check the disk and run the same command again"
    return f"{where}: {reason}; {hint}"


class WorkerBug(BuildError):
    """An exception inside a worker that is no item status and no output problem: a bug in ffx.
    One line; the worker's traceback is kept for FFX_DEBUG=1."""

    def __init__(self, worker_traceback: str):
        last = worker_traceback.strip().splitlines()[-1] if worker_traceback.strip() else "unknown error"
        super().__init__(
            f"a worker process failed: {last} (a bug in ffx: FFX_DEBUG=1 shows where; please report it)"
        )
        self.worker_traceback = worker_traceback

"""A FUSE passthrough of a folder on which flock() and POSIX locks fail, for tests.

Lustre mounted without `flock` (ENOSYS) and NFS without a lock manager (ENOLCK) refuse locks while
everything else works; tests use this file system to see that code copes there. Everything a build
does (create, read, write, truncate, hard links, atomic rename over an existing file, unlink,
mkdir/rmdir, symlinks, utime with nanoseconds, chmod, fsync, O_EXCL) is passed through to the
backing folder; `flock` on a file fails with ENOLCK (or `lock_errno`), and so do `fcntl` locks
(`fcntl.lockf`, F_GETLK, OFD locks). Unlocking succeeds: there is nothing to unlock, and libfuse
unlocks on every close. What it cannot do: flock() on a folder is granted (the kernel keeps
folder locks to itself), and fstat() of an open file whose name is gone fails with ESTALE (libfuse's
path-based API; reading, writing and ftruncate still work).

Needs libfuse 3 with fusermount3 (`scripts/flockless-fs.sh install`), /dev/fuse, and mfusepy.
`mounted(backing, mountpoint)` serves the file system from a child process
(`python tests/flockless_fs.py BACKING MOUNTPOINT`); `unavailable()` says why it cannot be used
here, if it cannot.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import mfusepy
except (ImportError, OSError, AttributeError) as error:  # not installed, or no libfuse it can load
    mfusepy = None
    _MFUSEPY_ERROR = f"mfusepy cannot be imported ({type(error).__name__}: {error})"

# Without mfusepy the module still imports, so that tests can skip with unavailable()'s reason.
_Operations: Any = mfusepy.Operations if mfusepy is not None else object
_FUSE: Any = mfusepy.FUSE if mfusepy is not None else object

# utimensat's markers; libfuse 3 hands them over as tv_sec 0 and tv_nsec the marker, which is the
# nanosecond count mfusepy computes (use_ns), so they are told apart from real times here.
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
MOUNT_TIMEOUT = 20.0


class Passthrough(_Operations):
    """Every operation on the backing folder `root`, except locking, which fails with `lock_errno`."""

    # Times as integer nanoseconds (st_mtime_ns, os.utime(ns=...)); floats would round them.
    use_ns = True

    def __init__(self, root: Path | str, lock_errno: int = errno.ENOLCK) -> None:
        self.root = os.path.realpath(root)
        self.lock_errno = lock_errno

    def _full(self, path: str | None) -> str:
        # libfuse gives no path for an open file whose name is gone (hard_remove), and then only
        # the operations that also get its file handle can be served.
        if path is None:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
        return os.path.join(self.root, path.lstrip("/"))

    # Locks: the point of this file system.

    def flock(self, path: str, fh: int, op: int) -> int:
        """flock(2): refused, except unlocking (libfuse unlocks when a file is closed)."""
        if op & fcntl.LOCK_UN:
            return 0
        raise OSError(self.lock_errno, os.strerror(self.lock_errno))

    def lock(self, path: str | None, fh: int | None, cmd: int, lock: Any) -> int:
        """fcntl(2) record locks (F_GETLK, F_SETLK, F_SETLKW; lockf): refused, except F_UNLCK."""
        # libfuse sets F_UNLCK on every flush (close), and a failed unlock there would be noise.
        if cmd in (fcntl.F_SETLK, fcntl.F_SETLKW) and lock and lock.contents.l_type == fcntl.F_UNLCK:
            return 0
        raise OSError(self.lock_errno, os.strerror(self.lock_errno))

    # Metadata.

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        """stat(2), of the open file when there is one (its name may be gone)."""
        st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
        return {
            "st_mode": st.st_mode,
            "st_ino": st.st_ino,  # shown as is with use_ino: hard links share it
            "st_nlink": st.st_nlink,
            "st_uid": st.st_uid,
            "st_gid": st.st_gid,
            "st_rdev": st.st_rdev,
            "st_size": st.st_size,
            "st_blksize": st.st_blksize,
            "st_blocks": st.st_blocks,
            "st_atime": st.st_atime_ns,
            "st_mtime": st.st_mtime_ns,
            "st_ctime": st.st_ctime_ns,
        }

    def access(self, path: str, amode: int) -> int:
        """access(2); without it the kernel would answer yes to every X_OK."""
        if not os.access(self._full(path), amode):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return 0

    def chmod(self, path: str | None, mode: int) -> int:
        """chmod(2)."""
        os.chmod(self._full(path), mode)
        return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        """lchown(2); -1 keeps the owner or group."""
        os.chown(self._full(path), uid, gid, follow_symlinks=False)
        return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        """utimensat(2) in nanoseconds, UTIME_NOW and UTIME_OMIT included."""
        full = self._full(path)
        if times is None:
            os.utime(full, follow_symlinks=False)
            return 0
        atime, mtime = times
        if UTIME_OMIT in (atime, mtime):  # keep the current value: os.utime cannot omit one
            st = os.lstat(full)
            atime = st.st_atime_ns if atime == UTIME_OMIT else atime
            mtime = st.st_mtime_ns if mtime == UTIME_OMIT else mtime
        now = time.time_ns()
        atime = now if atime == UTIME_NOW else atime
        mtime = now if mtime == UTIME_NOW else mtime
        os.utime(full, ns=(atime, mtime), follow_symlinks=False)
        return 0

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        """truncate(2), or ftruncate(2) of the open file (FlocklessFUSE passes its handle)."""
        os.truncate(fh if fh is not None else self._full(path), length)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        """statvfs(3) of the backing file system."""
        sv = os.statvfs(self._full(path))
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree")
        return {key: getattr(sv, key) for key in (*keys, "f_favail", "f_flag", "f_namemax")}

    # Names.

    def readdir(self, path: str, fh: int) -> list[str | tuple[str, dict[str, int], int]]:
        """The entries with their inode numbers and types (scandir's d_ino and d_type)."""
        entries: list[str | tuple[str, dict[str, int], int]] = [".", ".."]
        with os.scandir(self._full(path)) as listing:
            for entry in listing:
                kind = 0  # unknown: the reader stats the entry
                if entry.is_symlink():
                    kind = stat.S_IFLNK
                elif entry.is_dir(follow_symlinks=False):
                    kind = stat.S_IFDIR
                elif entry.is_file(follow_symlinks=False):
                    kind = stat.S_IFREG
                entries.append((entry.name, {"st_ino": entry.inode(), "st_mode": kind}, 0))
        return entries

    def mkdir(self, path: str, mode: int) -> int:
        """mkdir(2); the caller's umask is already applied (serve() clears this process's)."""
        os.mkdir(self._full(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        """rmdir(2)."""
        os.rmdir(self._full(path))
        return 0

    def mknod(self, path: str, mode: int, dev: int) -> int:
        """mknod(2): FIFOs and sockets (regular files come through create)."""
        os.mknod(self._full(path), mode, dev)
        return 0

    def unlink(self, path: str) -> int:
        """unlink(2); open handles keep the file (hard_remove: no .fuse_hidden files)."""
        os.unlink(self._full(path))
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        """rename(2), atomically replacing `new`; renameat2(2) when there are flags."""
        if flags:
            _renameat2(self._full(old), self._full(new), flags)
        else:
            os.rename(self._full(old), self._full(new))
        return 0

    def link(self, target: str, source: str) -> int:
        """link(2): a new name `target` for the existing `source` (mfusepy's order)."""
        os.link(self._full(source), self._full(target), follow_symlinks=False)
        return 0

    def symlink(self, target: str, source: str) -> int:
        """symlink(2): `target` becomes a link whose content is `source`, kept as it is."""
        os.symlink(source, self._full(target))
        return 0

    def readlink(self, path: str) -> str:
        """readlink(2)."""
        return os.readlink(self._full(path))

    # Contents: file handles are the backing file's descriptors.

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        """open(2) with O_CREAT: the caller's flags, O_EXCL included, go to the backing file."""
        return os.open(self._full(path), flags | os.O_CREAT, mode)

    def open(self, path: str, flags: int) -> int:
        """open(2), O_TRUNC and O_APPEND included."""
        return os.open(self._full(path), flags)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        """pread(2)."""
        return os.pread(fh, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        """pwrite(2) (appends when the file was opened with O_APPEND)."""
        return os.pwrite(fh, data, offset)

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        """fsync(2) or fdatasync(2) of the backing file."""
        (os.fdatasync if datasync else os.fsync)(fh)
        return 0

    def release(self, path: str | None, fh: int) -> int:
        """The last close: the backing descriptor is closed."""
        os.close(fh)
        return 0


class FlocklessFUSE(_FUSE):
    """mfusepy's FUSE (3.1.1), passing on what its libfuse 3 wrappers drop: rename's flags (RENAME_NOREPLACE
    would otherwise replace silently) and ftruncate's file handle (for a file whose name is gone)."""

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return self.operations.rename(
            old.decode(self.encoding, self.errors), new.decode(self.encoding, self.errors), flags
        )

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        fh = fip.contents.fh if fip else None
        name = None if path is None else path.decode(self.encoding, self.errors)
        return self.operations.truncate(name, length, fh)


def _renameat2(old: str, new: str, flags: int) -> None:
    # Python has no renameat2; glibc has had it since 2.28.
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(old), at_fdcwd, os.fsencode(new), ctypes.c_uint(flags)):
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number), old, None, new)


def serve(backing: Path, mountpoint: Path, lock_errno: int = errno.ENOLCK, debug: bool = False) -> None:
    """Mount the file system and serve it until it is unmounted (blocks; the child's work)."""
    if mfusepy is None:
        raise SystemExit(_MFUSEPY_ERROR)
    if mfusepy.fuse_version_major != 3:
        raise SystemExit(f"mfusepy loaded libfuse {mfusepy.fuse_version_major}; set FUSE_LIBRARY_NAME=fuse3")
    # The kernel has applied the caller's umask to create's and mkdir's mode already.
    os.umask(0)
    FlocklessFUSE(
        Passthrough(backing, lock_errno),
        str(mountpoint),
        foreground=True,
        debug=debug,
        # Several threads serve requests, so processes using the mount at once do not queue.
        nothreads=False,
        # st_ino from the backing folder: hard links share one, as code checking links expects.
        use_ino=True,
        # unlink and rename-over of an open file really happen; by default libfuse renames it to
        # .fuse_hiddenNNN instead, which breaks rename's atomicity and rmdir of the folder.
        hard_remove=True,
        # No caching of names and attributes in the kernel: the two names of a hard link are two
        # kernel inodes here (libfuse's high-level API), and a cached st_nlink would go stale.
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        # No auto_unmount: its fusermount3 helper outlives this process for a moment, and could
        # unmount the next file system mounted at the same place; mounted() unmounts instead.
        fsname="flockless",
        subtype="flockless",
    )


def unavailable() -> str | None:
    """Why the file system cannot be mounted on this machine, or None when it can (probably)."""
    if not sys.platform.startswith("linux"):
        return "FUSE mounts are tested on Linux only"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None or ctypes.util.find_library("fuse3") is None:
        return "no fuse3 (scripts/flockless-fs.sh install)"
    if mfusepy is None:
        return _MFUSEPY_ERROR
    return None


def _in_mount_table(mountpoint: Path) -> bool:
    # os.path.ismount says False for the mount of a server that died (stat fails with ENOTCONN),
    # which still has to be unmounted.
    wanted = os.path.realpath(mountpoint)
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as table:
        # The mount point is the second field, with space, tab, newline and backslash in octal.
        places = (line.split()[1] for line in table if line.strip())
        return any(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), place) == wanted for place in places)


def _fusermount(*args: str) -> bool:
    done = subprocess.run(["fusermount3", *args], capture_output=True, text=True, check=False)
    return done.returncode == 0


@contextlib.contextmanager
def mounted(backing: Path, mountpoint: Path, lock_errno: int = errno.ENOLCK) -> Iterator[Path]:
    """Mount a lock-refusing passthrough of `backing` at `mountpoint` (both made if missing) in a
    child process, yield the mountpoint, and unmount it afterwards, also when the body raised."""
    backing.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), str(backing), str(mountpoint)]
    command += ["--errno", errno.errorcode[lock_errno]]
    # mfusepy loads libfuse 2 when both are installed; fusermount3 belongs to libfuse 3.
    env = {**os.environ, "FUSE_LIBRARY_NAME": "fuse3"}
    with tempfile.TemporaryFile() as log:
        # A session of its own: Ctrl-C on the tests reaches this function's cleanup, not the server.
        server = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
        )
        try:
            deadline = time.monotonic() + MOUNT_TIMEOUT
            while not os.path.ismount(mountpoint):
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace").strip()
                    state = f"exited with {server.returncode}" if server.poll() is not None else "timed out"
                    raise RuntimeError(f"flockless FUSE mount at {mountpoint} {state}: {output}")
                time.sleep(0.02)
            yield mountpoint
        finally:
            # -u fails while a file in the mount is still open or a process has it as working
            # folder; -z then detaches it at once, but the server would go on serving those until
            # they let go, so it is stopped after a moment (they then get ENOTCONN).
            grace = 10.0
            if _in_mount_table(mountpoint) and not _fusermount("-u", str(mountpoint)):
                _fusermount("-u", "-z", str(mountpoint))
                grace = 1.0
            try:
                server.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                server.terminate()
                try:
                    server.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()


def flock_errno(path: Path) -> int | None:
    """The errno of a non-blocking exclusive flock() on the file `path` (a probe file is made
    and removed when it is a folder), or None when the lock was granted (and released)."""
    probe = path / f".flock-probe-{os.getpid()}" if path.is_dir() else path
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        return error.errno
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
        if probe != path:
            probe.unlink()


def flock_fails(path: Path, number: int = errno.ENOLCK) -> bool:
    """Whether flock() on `path` (a file, or a folder to probe in) fails with errno `number`."""
    return flock_errno(path) == number


def main(argv: list[str] | None = None) -> None:
    """Serve BACKING at MOUNTPOINT until it is unmounted (what mounted() runs)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backing", type=Path, help="the folder to pass through")
    parser.add_argument("mountpoint", type=Path, help="an empty folder to mount it on")
    parser.add_argument("--errno", default="ENOLCK", help="what locking fails with (default ENOLCK)")
    parser.add_argument("--debug", action="store_true", help="libfuse's trace of every request")
    args = parser.parse_args(argv)
    serve(args.backing, args.mountpoint, getattr(errno, args.errno), args.debug)


if __name__ == "__main__":
    main()

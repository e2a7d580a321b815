#!/usr/bin/env bash
# FUSE on this machine, for the tests that need a file system on which flock() fails with ENOLCK
# (as on Lustre mounted without `flock`): tests/flockless_fs.py mounts a passthrough of a folder
# through libfuse 3 (the Python binding is mfusepy, from PyPI) whose flock and POSIX locks fail.
# `install` installs Debian's fuse3 (fusermount3 and libfuse3) if it is missing (as root);
# `status` says whether fusermount3 and /dev/fuse are there. Each is idempotent and ends with one
# line on what it did.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"

say() { echo "flockless-fs: $*"; }
fail() { echo "flockless-fs: error: $*" >&2; exit 1; }

have_fuse() { # fusermount3 to mount and unmount, /dev/fuse for the kernel side
  command -v fusermount3 >/dev/null && [[ -c /dev/fuse ]]
}

install() {
  if command -v fusermount3 >/dev/null; then
    [[ -c /dev/fuse ]] || fail "fuse3 is installed but /dev/fuse is missing (a container needs --device /dev/fuse)"
    say "already installed; $(fusermount3 --version 2>&1 | head -n1)"
    return 0
  fi
  apt_install fuse3
  [[ -c /dev/fuse ]] || fail "installed fuse3, but /dev/fuse is missing (a container needs --device /dev/fuse)"
  say "installed fuse3; $(fusermount3 --version 2>&1 | head -n1)"
}

status() {
  if have_fuse; then
    say "ready; $(fusermount3 --version 2>&1 | head -n1), /dev/fuse present"
  else
    local missing=()
    command -v fusermount3 >/dev/null || missing+=(fusermount3)
    [[ -c /dev/fuse ]] || missing+=(/dev/fuse)
    say "not ready; missing ${missing[*]} (run: $0 install)"
    return 1
  fi
}

case ${1:-} in
  install) install ;;
  status) status ;;
  *) echo "usage: $0 install|status" >&2; exit 2 ;;
esac

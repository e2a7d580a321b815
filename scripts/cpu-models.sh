#!/usr/bin/env bash
# Other CPU models on this machine, for the test that the PNG encoder writes the same bytes whatever
# kernels the CPU has (tests/pipeline/media/test_png.py runs it under qemu-x86_64 -cpu Haswell, an
# AVX2 CPU without AVX-512, and -cpu Nehalem, SSE4.2 without AVX). `install` installs Debian's
# qemu-user if it is missing (as root); `status` says whether qemu-x86_64 is there. Each is
# idempotent and ends with one line on what it did.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"

say() { echo "cpu-models: $*"; }
fail() { echo "cpu-models: error: $*" >&2; exit 1; }

install() {
  if command -v qemu-x86_64 >/dev/null; then
    say "already installed; $(qemu-x86_64 --version | head -n1)"
    return 0
  fi
  apt_install qemu-user
  say "installed qemu-user; $(qemu-x86_64 --version | head -n1)"
}

status() {
  if command -v qemu-x86_64 >/dev/null; then
    say "ready; $(qemu-x86_64 --version | head -n1)"
  else
    fail "qemu-x86_64 not found; run: sudo bash scripts/cpu-models.sh install"
  fi
}

case "${1:-}" in
  install) install ;;
  status) status ;;
  *) fail "usage: bash scripts/cpu-models.sh install|status" ;;
esac

# Sourced by the scripts that install the Debian packages tests need (slurm-cluster.sh,
# flockless-fs.sh, cpu-models.sh). `apt_install PACKAGE...` installs them as root; apt's chatter is
# shown only when it fails. The sourcing script defines `fail` (print one line, exit 1).

apt_install() {
  [[ $(id -u) == 0 ]] || fail "$* not installed; run this as root (it uses apt-get)"
  local log
  log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"; } \
    >"$log" 2>&1 </dev/null; then
    cat "$log" >&2
    rm -f "$log"
    fail "apt-get install $* failed (its output is above)"
  fi
  rm -f "$log"
}

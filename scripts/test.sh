#!/usr/bin/env bash
# Runs every Segel test. Installs what a fresh machine lacks: the interop validators
# (pyHanko, poppler-utils, qpdf) and SoftHSM2. Under CI=true a missing validator fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v pdfsig >/dev/null 2>&1 || need_apt+=(poppler-utils)
command -v qpdf >/dev/null 2>&1 || need_apt+=(qpdf)
command -v softhsm2-util >/dev/null 2>&1 || need_apt+=(softhsm2)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
PY=${SEGEL_PYTHON:-python3}
if ! "$PY" -c 'import pyhanko, pyhanko_certvalidator, pyhanko.cli' >/dev/null 2>&1; then
  echo "installing pyHanko (pip)"
  "$PY" -m pip install -q 'pyhanko==0.38.*' 'pyhanko-cli==0.6.*'
fi

# One build, one integration-test binary (tests/it), plus the library's unit tests.
cargo test --locked --all-features --lib --bins --test it -- "$@"

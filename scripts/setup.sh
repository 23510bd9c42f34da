#!/usr/bin/env bash
# Installs everything torchshard needs on a fresh Debian 12 machine (run as root,
# or with sudo available) and builds torchshard into the current Python
# environment. Safe to re-run: steps already done are skipped.
#
#   scripts/setup.sh            # runtime + build deps, torch, torchshard, and
#                               # matplotlib for the benchmark's charts (the main job)
#   scripts/setup.sh --test     # ... plus the test dependencies (and the
#                               # sanitizer runtimes scripts/sanitize.sh uses)
set -euo pipefail

PYTHON=${PYTHON:-python3}
WITH_TESTS=0
[[ "${1:-}" == "--test" ]] && WITH_TESTS=1
cd "$(dirname "$0")/.."

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"

# Build toolchain and the two system libraries (Abseil's flat_hash_map, xxHash's XXH3).
debian_packages=(g++ cmake ninja-build pkg-config libabsl-dev libxxhash-dev)
# The sanitizer run (scripts/sanitize.sh, part of CI) preloads gcc's ASan and UBSan
# runtimes; g++ pulls them in on Debian 12, named here so that stays true.
if (( WITH_TESTS )); then
  debian_packages+=(libasan8 libubsan1)
fi
missing=()
for package in "${debian_packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if (( ${#missing[@]} )); then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# torch==2.13.0 exactly: that pin resolves to the CPU build kept on this kind of
# machine; anything looser pulls several GB of CUDA wheels.
"$PYTHON" -m pip install -q "torch==2.13.0" "setuptools>=64" wheel matplotlib
if (( WITH_TESTS )); then
  "$PYTHON" -m pip install -q "pytest>=8" expecttest hypothesis numpy
fi

# --no-build-isolation: build against the torch just installed, not a fresh one.
"$PYTHON" -m pip install -q --no-build-isolation --no-deps -e .
"$PYTHON" -m torchshard.info | sed -n '1,3p'

#!/usr/bin/env bash
# Builds torchshard._C with AddressSanitizer + UndefinedBehaviorSanitizer and runs
# the core test subset against it (docs/reliability.md).
#
#   scripts/sanitize.sh                 # build (incremental) + core subset
#   scripts/sanitize.sh tests/test_x.py # build + the given pytest arguments instead
#
# The instrumented module goes to build/sanitize/, never over the normal build: the
# tests import a staged copy of the package (build/sanitize/lib/torchshard) with the
# instrumented _C next to the Python sources of this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
STAGE=$ROOT/build/sanitize/lib

# -g for symbolized reports; Release keeps torchshard/_build_info.py (which every
# build rewrites) identical to the normal build's.
CXXFLAGS="${CXXFLAGS:-} -g" TORCHSHARD_SANITIZE=address,undefined \
  "$PYTHON" setup.py -q build_ext --build-temp build/sanitize/temp --build-lib "$STAGE"
cp torchshard/*.py torchshard/*.pyi torchshard/py.typed "$STAGE/torchshard/"

# The ASan runtime must be the first library in the process: python itself is not
# instrumented, so it is preloaded. libstdc++ is preloaded with it because python does
# not link it: otherwise ASan's __cxa_throw interceptor finds no real __cxa_throw and
# the first C++ exception (torch raising a Python error) dies in an ASan CHECK.
# CPython and torch keep allocations alive until exit by design, so leak detection is
# off; everything else is fatal.
export LD_PRELOAD="$(${CXX:-g++} -print-file-name=libasan.so) $(${CXX:-g++} -print-file-name=libstdc++.so)"
# Reports go to files (one per process): pytest captures a test's stderr, and a report
# written there is lost when the process aborts.
REPORTS=$ROOT/build/sanitize/reports
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0:log_path=$REPORTS/asan
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$REPORTS/ubsan
export PYTHONPATH=$STAGE  # subprocess scenarios (test_lifetime.py) import it too

if (( $# )); then
  TESTS=("$@")
else
  TESTS=(tests/test_native_hit.py tests/test_native_classes.py tests/test_bad_input.py
         tests/test_api.py tests/test_threads.py tests/test_capacity.py
         tests/test_lifetime.py tests/test_collective_output.py
         "tests/test_stress.py::test_stress_short")
fi
cd "$STAGE"  # '' on sys.path is the staged package, not the source tree
"$PYTHON" -c "import torchshard._C as c, sys; assert c.__file__.startswith('$STAGE'), c.__file__; print('sanitized module:', c.__file__)"
LOG=$ROOT/build/sanitize/pytest.log
set +e
"$PYTHON" -m pytest -q -p no:cacheprovider --rootdir "$ROOT" -c "$ROOT/pyproject.toml" \
  "${TESTS[@]/#tests\//$ROOT/tests/}" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
# Any report fails the run, whether or not its process halted (subprocess scenarios
# write theirs too); each is printed in full.
if compgen -G "$REPORTS/*" > /dev/null || grep -q -e "runtime error:" -e "ERROR: AddressSanitizer" "$LOG"; then
  for report in "$REPORTS"/*; do
    [[ -e $report ]] && { echo "== $report" >&2; cat "$report" >&2; }
  done
  echo "sanitize: sanitizer report found (above, and in $REPORTS and $LOG)" >&2
  exit 1
fi
exit "$status"

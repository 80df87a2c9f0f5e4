#!/usr/bin/env bash
# Builds residfs and runs the whole test suite: C unit tests and the CUDA
# checks (meson test), the integration tests (pytest, real FUSE mounts),
# the tests against torch/transformers/residuals (tests/hf), vLLM on a mount
# (tests/vllm), mergekit recipes against mergekit (tests/merge), a short run of
# each fuzz target (tests/fuzz/run.sh) and the unit and integration tests
# again under ASan+UBSan and TSan (tests/sanitize.sh).  Prints one closing
# line "N passed, N failed, N skipped" over all of them (docs/testing.md).
#
# Environment:
#   BUILD_DIR        meson build directory (default: build)
#   RESIDFS_VENV     Python environment of tests/integration (default:
#                    ~/.cache/residfs/venv-<hash of tests/requirements-core.txt>)
#   RESIDFS_HF_VENV  the same for tests/hf (see tests/hf/run.sh)
#   RESIDFS_VLLM_VENV  the same for tests/vllm (see tests/vllm/run.sh)
#   RESIDFS_MERGE_VENV the same for tests/merge (see tests/merge/run.sh)
#   RESIDFS_NO_VLLM=1  leave out the vLLM tests (tests/vllm: vLLM's CPU build on
#                    a mount; its environment, about 6 GB, takes about 4 minutes
#                    to make on the first run and the suite 3 to 4 minutes)
#   RESIDFS_NO_FUZZ=1, RESIDFS_NO_SANITIZE=1  leave out the fuzz smoke run
#                    or the sanitizer builds (build-fuzz, build-asan, build-tsan)
#   RESIDFS_FUZZ_SECONDS  seconds per fuzz target (default 25)
# The environments are made on the first run and reused after, so only the
# first run downloads packages (about 2 minutes for torch and friends).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${BUILD_DIR:-build}

# build the CUDA code whenever the toolkit is there, even if not on PATH
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
	export PATH="$PATH:/usr/local/cuda/bin"
fi
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" >/dev/null || { echo "meson setup failed"; echo "0 passed, 1 failed"; exit 1; }
fi
ninja -C "$build" || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }

# --- C unit tests ---
meson test -C "$build" --print-errorlogs --no-rebuild
unit_rc=$?
read -r u_ok u_fail u_skip < <(tests/counts.py meson "$build/meson-logs/testlog.json")

# --- pytest suites ---
junit_counts() { "$root/tests/counts.py" junit "$1"; }
export RESIDFS_BIN="$root/$build/fs/residfs"
p_ok=0; p_fail=0; p_skip=0; py_bad=0

# integration tests: numpy + safetensors, real mounts (tests/integration)
venv=$(tests/venv.sh)
junit=$(mktemp)
if [ -x "$venv/bin/pytest" ]; then
	"$venv/bin/pytest" -q -p no:cacheprovider --junitxml="$junit" tests/integration
	rc=$?
else
	rc=3
fi
read -r a b c < <(junit_counts "$junit")
[ "$rc" -eq 5 ] && b=$((b + 1))                 # pytest ran no test: a failure here
[ "$rc" -ne 0 ] && [ "$b" -eq 0 ] && b=1         # it failed without saying what
p_ok=$((p_ok + a)); p_fail=$((p_fail + b)); p_skip=$((p_skip + c))
echo "integration: $a passed, $b failed, $c skipped"

# the real packages: torch, transformers, residuals (tests/hf, its own venv)
"$root/tests/hf/run.sh" --junitxml="$junit"
rc=$?
read -r a b c < <(junit_counts "$junit")
[ "$rc" -eq 5 ] && b=$((b + 1))
[ "$rc" -ne 0 ] && [ "$b" -eq 0 ] && b=1
p_ok=$((p_ok + a)); p_fail=$((p_fail + b)); p_skip=$((p_skip + c))
echo "hf: $a passed, $b failed, $c skipped"

# vLLM's CPU build loading and serving a mount (tests/vllm, its own venv)
if [ -z "${RESIDFS_NO_VLLM:-}" ]; then
	: >"$junit"      # an install that fails writes no results: count it, not the hf ones
	"$root/tests/vllm/run.sh" --junitxml="$junit"
	rc=$?
	read -r a b c < <(junit_counts "$junit")
	[ "$rc" -eq 5 ] && b=$((b + 1))
	[ "$rc" -ne 0 ] && [ "$b" -eq 0 ] && b=1
	p_ok=$((p_ok + a)); p_fail=$((p_fail + b)); p_skip=$((p_skip + c))
	echo "vllm: $a passed, $b failed, $c skipped"
fi

# mergekit recipes mounted and compared with mergekit's output (tests/merge, its own venv)
: >"$junit"
"$root/tests/merge/run.sh" --junitxml="$junit"
rc=$?
read -r a b c < <(junit_counts "$junit")
[ "$rc" -eq 5 ] && b=$((b + 1))
[ "$rc" -ne 0 ] && [ "$b" -eq 0 ] && b=1
p_ok=$((p_ok + a)); p_fail=$((p_fail + b)); p_skip=$((p_skip + c))
echo "merge: $a passed, $b failed, $c skipped"
rm -f "$junit"

# last_counts FILE: "passed failed skipped" of the last "N passed, N failed, N skipped"
# line of FILE (1 failure when there is none: the script died before it)
last_counts() {
	sed -n 's/^\(.*: \)\{0,1\}\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed, \([0-9][0-9]*\) skipped.*/\2 \3 \4/p' "$1" |
		tail -1 | grep . || echo "0 1 0"
}

# fuzz targets (tests/fuzz): ~25 s each on their corpora, one result per target;
# sanitizer builds (tests/sanitize.sh): unit and integration tests under
# ASan+UBSan and TSan.  RESIDFS_NO_FUZZ=1 / RESIDFS_NO_SANITIZE=1 leave them out.
s_ok=0; s_fail=0; s_skip=0
out=$(mktemp)
if [ -z "${RESIDFS_NO_FUZZ:-}" ]; then
	"$root/tests/fuzz/run.sh" -t "${RESIDFS_FUZZ_SECONDS:-25}" 2>&1 | tee "$out"
	read -r a b c < <(last_counts "$out")
	s_ok=$((s_ok + a)); s_fail=$((s_fail + b)); s_skip=$((s_skip + c))
fi
if [ -z "${RESIDFS_NO_SANITIZE:-}" ]; then
	RESIDFS_VENV="$venv" "$root/tests/sanitize.sh" 2>&1 | tee "$out"
	read -r a b c < <(last_counts "$out")
	s_ok=$((s_ok + a)); s_fail=$((s_fail + b)); s_skip=$((s_skip + c))
	echo "sanitize: $a passed, $b failed, $c skipped"
fi
rm -f "$out"

passed=$((u_ok + p_ok + s_ok)); failed=$((u_fail + p_fail + s_fail)); skipped=$((u_skip + p_skip + s_skip))
echo "unit: $u_ok passed, $u_fail failed, $u_skip skipped; pytest: $p_ok passed, $p_fail failed, $p_skip skipped; fuzz+sanitize: $s_ok passed, $s_fail failed, $s_skip skipped"
echo "$passed passed, $failed failed, $skipped skipped"
if [ "$failed" -ne 0 ] || [ "$unit_rc" -ne 0 ]; then
	exit 1
fi
exit 0

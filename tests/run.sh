#!/usr/bin/env bash
# Builds residfs and runs the whole test suite: C unit tests (meson test)
# and the integration tests (pytest, real FUSE mounts).  Prints one closing
# line "N passed, N failed, N skipped" over both.
#
# Environment:
#   BUILD_DIR      meson build directory (default: build)
#   RESIDFS_VENV   Python virtual environment for the tests (default:
#                  ~/.cache/residfs/venv-<hash of the requirements>), reused
#                  between runs so only the first one downloads packages.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${BUILD_DIR:-build}

if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" >/dev/null || { echo "meson setup failed"; echo "0 passed, 1 failed"; exit 1; }
fi
ninja -C "$build" || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }

# --- C unit tests ---
meson test -C "$build" --print-errorlogs --no-rebuild
unit_rc=$?
read -r u_ok u_fail u_skip < <(python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, sys
ok = fail = skip = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line).get("result")
        if r == "OK": ok += 1
        elif r in ("SKIP",): skip += 1
        elif r: fail += 1
except OSError:
    fail = 1
print(ok, fail, skip)
PY
)

# --- integration tests ---
req=tests/requirements-core.txt
hash=$(sha256sum "$req" | cut -c1-12)
venv=${RESIDFS_VENV:-$HOME/.cache/residfs/venv-$hash}
if [ ! -x "$venv/bin/pytest" ]; then
	rm -rf "$venv"
	python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" ||
		{ echo "could not install $req"; echo "$u_ok passed, $((u_fail + 1)) failed"; exit 1; }
fi
export RESIDFS_BIN="$root/$build/fs/residfs"
junit=$(mktemp)
"$venv/bin/pytest" -q -p no:cacheprovider --junitxml="$junit" tests/integration
py_rc=$?
read -r p_ok p_fail p_skip < <(python3 - "$junit" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    t = sum(int(s.get("tests", 0)) for s in suites)
    f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    s = sum(int(s.get("skipped", 0)) for s in suites)
    print(t - f - s, f, s)
except Exception:
    print(0, 1, 0)
PY
)
rm -f "$junit"
if [ "$py_rc" -eq 5 ]; then # pytest ran no test: that is a failure here
	p_fail=$((p_fail + 1))
fi

passed=$((u_ok + p_ok)); failed=$((u_fail + p_fail)); skipped=$((u_skip + p_skip))
echo "unit: $u_ok passed, $u_fail failed, $u_skip skipped; integration: $p_ok passed, $p_fail failed, $p_skip skipped"
echo "$passed passed, $failed failed, $skipped skipped"
if [ "$failed" -ne 0 ] || [ "$unit_rc" -ne 0 ] || { [ "$py_rc" -ne 0 ] && [ "$py_rc" -ne 5 ]; }; then
	exit 1
fi
exit 0

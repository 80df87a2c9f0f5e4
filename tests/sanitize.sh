#!/usr/bin/env bash
# tests/sanitize.sh - the C unit tests (meson test, the cuda-emu check
# included) and the integration suite (tests/integration, real FUSE mounts)
# against sanitizer builds of residfs:
#   asan  AddressSanitizer + LeakSanitizer + UndefinedBehaviorSanitizer
#         (meson -Db_sanitize=address,undefined), in build-asan
#   tsan  ThreadSanitizer (meson -Db_sanitize=thread), in build-tsan
# Both are built with -Dcuda=disabled (the CUDA kernels' arithmetic is still
# checked on the CPU by the cuda-emu test, sanitized too).
#
# usage: tests/sanitize.sh [asan] [tsan]     (default: both)
#
# Every sanitizer writes its reports to files in a fresh directory
# (log_path): `residfs mount` daemonizes and sends its stderr to /dev/null,
# so a report of the daemon (a leak found when it exits at unmount, a race
# in a FUSE worker thread) would otherwise be lost.  After each suite the
# script waits for the daemons of that build to exit, prints every report
# file and counts each as a failure.  The first error of a process ends it
# (halt_on_error), leaks included.
#
# Prints, per build, "<build>: N passed, N failed, N skipped" (tests plus
# report files) and the time each part took, and closes with the sum as
# "N passed, N failed, N skipped" (tests/run.sh adds it to its total).
#
# Environment:
#   SAN_BUILD_PREFIX  build directories are ${SAN_BUILD_PREFIX}asan and
#                     ${SAN_BUILD_PREFIX}tsan (default: build-)
#   RESIDFS_VENV      Python environment with tests/requirements-core.txt
#                     (default: the one tests/run.sh makes and reuses)
#   SAN_PYTEST_ARGS   extra pytest arguments (e.g. "-x" or "-k fs")
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
kinds=("$@")
[ ${#kinds[@]} -eq 0 ] && kinds=(asan tsan)
prefix=${SAN_BUILD_PREFIX:-build-}

# tests that make no sense under a sanitizer: "nodeid-substring|reason" (none today)
SKIPS=(
)

# the same Python environment as tests/run.sh
venv=$(tests/venv.sh)

now() { date +%s; }

meson_counts() { "$root/tests/counts.py" meson "$1"; }
junit_counts() { "$root/tests/counts.py" junit "$1"; }

# wait_daemons BIN: waits (at most 60 s) until no process runs BIN
wait_daemons() {
	local bin i p left
	bin=$(readlink -f "$1")
	for i in $(seq 600); do
		left=0
		for p in /proc/[0-9]*; do
			[ "$(readlink "$p/exe" 2>/dev/null)" = "$bin" ] && left=1 && break
		done
		[ $left -eq 0 ] && return 0
		sleep 0.1
	done
	echo "sanitize: residfs processes of $bin still run after 60 s"
	return 1
}

# reports DIR: prints each report file; echoes their number last
reports() {
	local n=0 f
	for f in "$1"/*; do
		[ -f "$f" ] || continue
		n=$((n + 1))
		{
			echo "---- sanitizer report $(basename "$f") ----"
			head -120 "$f"
		} >&2
	done
	echo "$n"
}

all_ok=0; all_fail=0; all_skip=0
for kind in "${kinds[@]}"; do
	case $kind in
	asan) opts=(-Db_sanitize=address,undefined); emu=address,undefined ;;
	tsan) opts=(-Db_sanitize=thread); emu=thread ;;
	*) echo "sanitize: unknown build '$kind' (asan or tsan)"; all_fail=$((all_fail + 1)); continue ;;
	esac
	build=$prefix$kind
	opts+=(-Db_lundef=false -Dcuda=disabled)
	t0=$(now)
	blog=$(mktemp)
	if [ -f "$build/build.ninja" ]; then
		meson configure "$build" "${opts[@]}" >"$blog" 2>&1
	else
		meson setup "$build" "${opts[@]}" >"$blog" 2>&1
	fi && ninja -C "$build" >>"$blog" 2>&1
	if [ $? -ne 0 ]; then
		tail -40 "$blog"
		rm -f "$blog"
		echo "$kind: build failed"
		echo "$kind: 0 passed, 1 failed, 0 skipped"
		all_fail=$((all_fail + 1))
		continue
	fi
	rm -f "$blog"
	t1=$(now)

	logs=$(mktemp -d "${TMPDIR:-/tmp}/residfs-$kind-reports.XXXXXX")
	# every error ends the process and lands in a file of $logs (one per pid)
	export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:log_path=$logs/asan"
	export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"
	export LSAN_OPTIONS="log_path=$logs/lsan"
	export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$logs/tsan"
	export SANITIZE=$emu # tests/cuda/emu/run.sh sanitizes its own build
	# TSan of gcc 12 needs a narrower address-space randomization than newer
	# kernels use (vm.mmap_rnd_bits 32: "unexpected memory mapping"); without
	# randomization it runs everywhere
	run=()
	if [ "$kind" = tsan ] && setarch "$(uname -m)" -R true 2>/dev/null; then
		run=(setarch "$(uname -m)" -R)
	fi

	# --- C unit tests ---
	"${run[@]}" meson test -C "$build" --print-errorlogs --no-rebuild --timeout-multiplier 4 >"$logs.unit" 2>&1
	urc=$?
	read -r u_ok u_fail u_skip < <(meson_counts "$build/meson-logs/testlog.json")
	[ $urc -ne 0 ] && [ "$u_fail" -eq 0 ] && u_fail=1
	[ "$u_fail" -ne 0 ] && tail -60 "$logs.unit"
	rm -f "$logs.unit"
	t2=$(now)

	# --- integration tests against this build ---
	plug=$(mktemp -d)
	{
		echo 'import pytest'
		echo 'SKIPS = ['
		for s in "${SKIPS[@]}"; do
			printf '    (%s, %s),\n' "$(printf '%s' "${s%%|*}" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" \
				"$(printf '%s' "${s#*|}" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')"
		done
		echo ']'
		echo 'def pytest_collection_modifyitems(config, items):'
		echo '    for item in items:'
		echo '        for sub, why in SKIPS:'
		echo '            if sub in item.nodeid:'
		echo '                item.add_marker(pytest.mark.skip(reason="under a sanitizer: " + why))'
	} >"$plug/rfs_sanitize_skips.py"
	junit=$(mktemp)
	if [ -x "$venv/bin/pytest" ]; then
		# shellcheck disable=SC2086
		RESIDFS_BIN="$root/$build/fs/residfs" PYTHONPATH="$plug${PYTHONPATH:+:$PYTHONPATH}" \
			"${run[@]}" "$venv/bin/pytest" -q -p no:cacheprovider -p rfs_sanitize_skips -rfEs \
			--junitxml="$junit" ${SAN_PYTEST_ARGS:-} tests/integration
		rc=$?
	else
		echo "sanitize: no pytest in $venv"
		rc=3
	fi
	read -r i_ok i_fail i_skip < <(junit_counts "$junit")
	[ $rc -eq 5 ] && i_fail=$((i_fail + 1))
	[ $rc -ne 0 ] && [ "$i_fail" -eq 0 ] && i_fail=1
	rm -rf "$plug" "$junit"
	wait_daemons "$build/fs/residfs" || i_fail=$((i_fail + 1))
	t3=$(now)
	unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS TSAN_OPTIONS SANITIZE

	nrep=$(reports "$logs")
	rm -rf "$logs"
	ok=$((u_ok + i_ok)); fail=$((u_fail + i_fail + nrep)); skip=$((u_skip + i_skip))
	echo "$kind: build $((t1 - t0)) s, unit tests $((t2 - t1)) s ($u_ok passed, $u_fail failed, $u_skip skipped), integration $((t3 - t2)) s ($i_ok passed, $i_fail failed, $i_skip skipped), $nrep sanitizer report(s)"
	echo "$kind: $ok passed, $fail failed, $skip skipped"
	all_ok=$((all_ok + ok)); all_fail=$((all_fail + fail)); all_skip=$((all_skip + skip))
done
echo "$all_ok passed, $all_fail failed, $all_skip skipped"
[ $all_fail -eq 0 ]

#!/usr/bin/env bash
# tests/fuzz/run.sh - builds the fuzz targets (tests/fuzz/build.sh) and runs
# each on a copy of its corpus (tests/fuzz/corpus/<target>, so the tree
# stays clean), one after another.  One passed or failed per target; prints
# per target its executions, exec/s and coverage, and closes with
# "fuzz: N passed, N failed, N skipped" (all skipped, with the reason, when
# clang or libFuzzer is missing).
#
# usage: tests/fuzz/run.sh [-t SECONDS] [-n RUNS] [TARGET...]
#   -t SECONDS  run each target this long (default 25, the CI smoke run,
#               unless -n is given)
#   -n RUNS     run each target for this many executions (with -t too: at
#               most that long)
#   TARGET      fuzz_st, fuzz_spec, fuzz_index, fuzz_config, fuzz_hub, fuzz_s3list,
#               fuzz_recipe, fuzz_tokvocab
#               (default: all)
# Environment:
#   FUZZ_BUILD     build directory (default: build-fuzz)
#   FUZZ_ARTIFACTS where crashing inputs are kept (default: FUZZ_BUILD/artifacts)
#   FUZZ_NICE      nice level of the fuzzers (default 0; use 15 on a shared machine)
#   FUZZ_KEEP      a directory: keep each target's grown corpus in FUZZ_KEEP/<target>
#   RFS_FUZZ_SKIP  tags of known bugs whose checks to skip (tests/fuzz/fuzz.h)
# A failure prints the end of the fuzzer's log, the reproducer's path and
# its bytes in base64; rerun it with: FUZZ_BUILD/<target> <reproducer>.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
secs=
runs=
while getopts "t:n:" o; do
	case $o in
	t) secs=$OPTARG ;;
	n) runs=$OPTARG ;;
	*) echo "usage: $0 [-t SECONDS] [-n RUNS] [TARGET...]" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ -z "$secs" ] && [ -z "$runs" ] && secs=25
build=${FUZZ_BUILD:-build-fuzz}
artifacts=${FUZZ_ARTIFACTS:-$build/artifacts}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	for t in tests/fuzz/fuzz_*.c; do
		targets+=("$(basename "$t" .c)")
	done
fi

mkdir -p "$build"
tests/fuzz/build.sh "$build" >"$build/build.log" 2>&1
rc=$?
if [ $rc -eq 2 ]; then
	sed 's/^/  /' "$build/build.log"
	echo "fuzz: 0 passed, 0 failed, ${#targets[@]} skipped (no clang with libFuzzer)"
	exit 0
elif [ $rc -ne 0 ]; then
	cat "$build/build.log"
	echo "fuzz: 0 passed, ${#targets[@]} failed, 0 skipped (the build failed)"
	exit 1
fi
mkdir -p "$artifacts"
artifacts=$(cd "$artifacts" && pwd)

pass=0
fail=0
for t in "${targets[@]}"; do
	bin="$build/$t"
	if [ ! -x "$bin" ]; then
		echo "$t: FAILED: no such target"
		fail=$((fail + 1))
		continue
	fi
	work=$(mktemp -d "${TMPDIR:-/tmp}/residfs-fuzz-$t.XXXXXX")
	mkdir -p "$work/corpus"
	if [ -d "tests/fuzz/corpus/$t" ]; then
		cp "tests/fuzz/corpus/$t"/* "$work/corpus/" 2>/dev/null
	fi
	args=(-rss_limit_mb=2048 -timeout=25 -print_final_stats=1
	      "-artifact_prefix=$artifacts/$t-")
	case $t in
	# a SPEC with 16 terms and its directory lines fits in 256 bytes; longer
	# inputs only cost time (the split search is quadratic in the operators)
	fuzz_spec) args+=(-dict=tests/fuzz/spec.dict -max_len=256) ;;
	fuzz_s3list) args+=(-dict=tests/fuzz/xml.dict) ;;
	fuzz_recipe) args+=(-dict=tests/fuzz/yaml.dict) ;;
	*) args+=(-dict=tests/fuzz/json.dict) ;;
	esac
	[ -n "$runs" ] && args+=("-runs=$runs")
	[ -n "$secs" ] && args+=("-max_total_time=$secs")
	start=$(date +%s)
	nice -n "${FUZZ_NICE:-0}" "$bin" "${args[@]}" "$work/corpus" >"$work/log" 2>&1
	rc=$?
	took=$(($(date +%s) - start))
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -1)
	cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$work/log" | tail -1)
	summary="${execs:-?} runs in ${took} s, ${speed:-?} exec/s, $cov"
	if [ $rc -eq 0 ]; then
		echo "$t: passed ($summary)"
		pass=$((pass + 1))
	else
		echo "$t: FAILED (exit $rc; $summary)"
		# the report: from the first error line, without libFuzzer's own frames
		sed -n '/check failed\|runtime error\|ERROR: \|==ERROR\|WARNING: /,$p' "$work/log" |
			grep -Ev 'in fuzzer::|__sanitizer_print_stack|pthread_kill|/raise\.c|/abort\.c|libc\.so|libc_start|in _start|^0x|^MS: |rudimentary signal|Combine libFuzzer|^ *$' |
			head -50 | sed 's/^/  | /'
		for a in $(sed -n "s/.*Test unit written to \(.*\)/\1/p" "$work/log"); do
			echo "  reproducer: $a"
			echo "  base64: $(base64 -w0 "$a")"
			echo "  rerun: $bin $a"
		done
		fail=$((fail + 1))
	fi
	if [ -n "${FUZZ_KEEP:-}" ]; then
		mkdir -p "$FUZZ_KEEP/$t"
		cp "$work/corpus"/* "$FUZZ_KEEP/$t/" 2>/dev/null
	fi
	rm -rf "$work"
done
echo "fuzz: $pass passed, $fail failed, 0 skipped"
[ $fail -eq 0 ]

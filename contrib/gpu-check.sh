#!/usr/bin/env bash
# contrib/gpu-check.sh - prove the CUDA kernels on a machine with a GPU.
#
# Builds residfs with -Dcuda=enabled into a fresh build directory, runs the
# CUDA test (bit-exact against the scalar reference) and the benchmark, and
# prints `nvidia-smi -L` and the benchmark table, then exports (and mounts,
# where /dev/fuse exists) a 1 GiB model with each backend and compares the
# bytes.  Needs nvcc (CUDA toolkit)
# and an NVIDIA driver; installs missing build packages with apt-get when it
# can (Debian 12), else tries PyPI for meson/ninja, else compiles the
# kernels and the two programs directly with nvcc and gcc.  Nothing outside
# this repository is needed.  Takes a minute or two (well under 8).
#
# usage: contrib/gpu-check.sh [build-dir]   (default: a new dir under /tmp)
# env:   BENCH_MIB=1024 (MiB of output per benchmark case), BENCH_REPS=3,
#        RESIDFS_BIN (residfs program for the end-to-end part when the meson
#        build cannot be made here), E2E_DIR (its work dir, ~3.3 GB),
#        OFFLINE=1 (no apt-get or pip: a machine without a network)
#
# Exit status: 0 when the test passed, 1 when it failed or could not run.

set -u
SECONDS=0
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$(mktemp -d /tmp/residfs-gpu.XXXXXX)}
build=${build%/}
bench_mib=${BENCH_MIB:-1024}
bench_reps=${BENCH_REPS:-3}
status=1

say() { printf '\n== %s  [%ss]\n' "$*" "$SECONDS"; }
have() { command -v "$1" >/dev/null 2>&1; }

export PATH="$PATH:/usr/local/cuda/bin"
cd "$src" || exit 1

say "GPU"
if have nvidia-smi; then
	timeout 60 nvidia-smi -L || echo "nvidia-smi failed"
else
	echo "nvidia-smi not found"
fi
if ! have nvcc; then
	echo "nvcc not found (looked in PATH and /usr/local/cuda/bin): cannot build the CUDA kernels"
	exit 1
fi
nvcc --version | tail -2

# ---- build tools and libraries ----
say "packages"
pkgs_ok() {
	have meson && have ninja && have pkg-config &&
		pkg-config --exists fuse3 libcjson libxxhash cmocka
}
if [ -n "${OFFLINE:-}" ]; then
	echo "OFFLINE set: no apt-get, no pip"
elif ! pkgs_ok; then
	sudo=()
	[ "$(id -u)" = 0 ] || { have sudo && sudo -n true 2>/dev/null && sudo=(sudo -n); }
	if have apt-get && { [ "$(id -u)" = 0 ] || [ ${#sudo[@]} -gt 0 ]; }; then
		echo "installing build packages with apt-get"
		timeout 90 "${sudo[@]}" apt-get update -qq ||
			echo "apt-get update failed (no mirror?)"
		timeout 240 "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install \
			-y -qq --no-install-recommends meson ninja-build pkg-config \
			libfuse3-dev fuse3 libcjson-dev libxxhash-dev libcmocka-dev ||
			echo "apt-get install failed"
	fi
fi
if [ -z "${OFFLINE:-}" ] && { ! have meson || ! have ninja; }; then
	echo "meson/ninja missing: trying PyPI in a venv"
	venv=/tmp/residfs-gpu-venv
	if { [ -x "$venv/bin/pip" ] || timeout 60 python3 -m venv "$venv"; } &&
	   timeout 180 "$venv/bin/pip" install -q meson ninja; then
		export PATH="$PATH:$venv/bin"
	else
		timeout 180 python3 -m pip install -q --user --break-system-packages \
			meson ninja 2>/dev/null ||
			timeout 180 python3 -m pip install -q --user meson ninja ||
			echo "pip install failed"
		export PATH="$PATH:$HOME/.local/bin"
	fi
fi

# ---- build ----
test_bin=
bench_bin=
use_meson=0

say "build (meson, -Dcuda=enabled) in $build"
if have meson && have ninja &&
   meson setup "$build" -Dcuda=enabled --buildtype=release >"$build.setup.log" 2>&1; then
	grep -iE "cuda|nvcc" "$build.setup.log"
	if ninja -C "$build" >"$build.ninja.log" 2>&1; then
		echo "full build: ok"
	else
		tail -20 "$build.ninja.log"
		echo "full build failed; building the CUDA test and benchmark only"
		ninja -C "$build" tests/cuda/test_cuda tests/cuda/bench_cuda ||
			echo "CUDA targets failed to build"
	fi
	if [ -x "$build/tests/cuda/test_cuda" ]; then
		test_bin=$build/tests/cuda/test_cuda
		bench_bin=$build/tests/cuda/bench_cuda
		use_meson=1
	fi
else
	[ -f "$build.setup.log" ] && tail -20 "$build.setup.log"
	echo "meson setup failed"
fi

if [ -z "$test_bin" ]; then
	# Fallback: the kernels alone, same flags as kernels/meson.build and
	# kernels/cuda/meson.build (keep them in step).
	say "build (direct nvcc/gcc fallback) in $build/standalone"
	sa=$build/standalone
	mkdir -p "$sa"
	cflags=(-std=gnu11 -O2 -ffp-contract=off -D_GNU_SOURCE -DRFS_HAVE_CUDA=1
		-Ikernels -Ikernels/cuda)
	objs=("$sa/kern.o" "$sa/kern_scalar.o" "$sa/kern_cuda.o")
	simd=()
	if [ "$(uname -m)" = x86_64 ] &&
	   gcc "${cflags[@]}" -mavx2 -mf16c -c kernels/kern_avx2.c -o "$sa/kern_avx2.o" &&
	   gcc "${cflags[@]}" -mavx2 -mf16c -mavx512f -mavx512bw -mavx512vl \
		-c kernels/kern_avx512.c -o "$sa/kern_avx512.o"; then
		simd=(-DRFS_HAVE_X86_SIMD=1)
		objs+=("$sa/kern_avx2.o" "$sa/kern_avx512.o")
	fi
	nvroot=$(dirname "$(dirname "$(command -v nvcc)")")
	cudart=
	for d in "$nvroot/lib64" "$nvroot/lib" "$nvroot"/targets/*/lib \
		 /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu; do
		[ -f "$d/libcudart_static.a" ] && { cudart=$d/libcudart_static.a; break; }
	done
	libs=("$cudart" -ldl -lrt -lpthread -lm)
	if [ -n "$cudart" ] &&
	   nvcc -std=c++17 -O3 --fmad=false --ftz=false --prec-div=true --prec-sqrt=true \
		-Xcompiler=-fPIC,-ffp-contract=off,-fno-exceptions,-fno-rtti,-fno-threadsafe-statics \
		-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 \
		-gencode=arch=compute_90,code=compute_90 -Ikernels -Ikernels/cuda \
		-c kernels/cuda/kern_cuda.cu -o "$sa/kern_cuda.o" &&
	   gcc "${cflags[@]}" "${simd[@]}" -c kernels/kern.c -o "$sa/kern.o" &&
	   gcc "${cflags[@]}" -c kernels/kern_scalar.c -o "$sa/kern_scalar.o" &&
	   gcc "${cflags[@]}" tests/cuda/test_cuda.c "${objs[@]}" "${libs[@]}" \
		-o "$sa/test_cuda" &&
	   gcc "${cflags[@]}" tests/cuda/bench_cuda.c "${objs[@]}" "${libs[@]}" \
		-o "$sa/bench_cuda"; then
		test_bin=$sa/test_cuda
		bench_bin=$sa/bench_cuda
	else
		echo "direct build failed (libcudart_static.a: ${cudart:-not found})"
	fi
fi
[ -n "$test_bin" ] || { say "FAILED: nothing to run"; exit 1; }

# ---- test ----
say "CUDA test (bit-exact against the scalar reference)"
if [ "$use_meson" = 1 ]; then
	timeout 600 meson test -C "$build" --no-rebuild -v cuda
	rc=$?
	# meson reports a skip (77) as success; look at the log too
	if grep -q "exit status 77" "$build/meson-logs/testlog.txt" 2>/dev/null; then
		rc=77
	fi
else
	timeout 600 "$test_bin"
	rc=$?
fi
case $rc in
0) echo "CUDA test: PASS"; status=0 ;;
77) echo "CUDA test: SKIPPED (no CUDA device answered)" ;;
*) echo "CUDA test: FAIL (status $rc)" ;;
esac

# ---- benchmark ----
say "benchmark ($bench_mib MiB of output per case)"
timeout 400 "$bench_bin" "$bench_mib" "$bench_reps"
echo "benchmark exit status $? (77: no device)"

# ---- end to end: the residfs program ----
# Export (and, with /dev/fuse, mount and read) a 1 GiB bf16 model plus a
# float32 delta with each backend; every result must equal the CPU export
# byte for byte.  Uses $build/fs/residfs, or RESIDFS_BIN when the meson
# build could not be made here (a residfs built elsewhere with CUDA).
# seconds since $1 (an $EPOCHREALTIME)
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }
# the smaller of two numbers
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a + 0 < b + 0) ? a : b }'; }

# mount VARIANT (backend[:min elements]) once; prints the seconds a full
# read of the merged shards took; compares them with $ref when $cmp is 1
e2e_mount() {
	local bin=$1 spec=$2 mnt=$3 v=$4 cmp=$5 ref=$6 t0 f rc=0
	RESIDFS_GPU_MIN_ELEMENTS=$([ "$v" = "${v#*:}" ] || echo "${v#*:}") \
		timeout 60 "$bin" mount --backend "${v%%:*}" "$spec" "$mnt" >&2 || return 1
	t0=$EPOCHREALTIME
	cat "$mnt"/*.safetensors >/dev/null || rc=1
	since "$t0"
	if [ "$cmp" = 1 ]; then
		for f in "$ref"/*.safetensors; do
			cmp "$f" "$mnt/$(basename "$f")" >&2 || rc=1
		done
		cat "$mnt/.residfs-stats" >&2
	fi
	fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt"
	sleep 0.3
	return $rc
}

e2e() {
	local bin=$1 work=$2 be r t t0 best mnt spec bytes ok=1 i v
	mkdir -p "$work" || return 1
	python3 -c 'import sys; sys.path.insert(0, "contrib/bench"); import bench; bench.workload_1g(sys.argv[1])' \
		"$work" || { echo "could not build the workload"; return 1; }
	spec=$work/base-1g+$work/delta-1g
	cat "$work"/base-1g/*.safetensors "$work"/delta-1g/*.safetensors >/dev/null
	echo "export: best of 3, the inputs in the page cache; every output compared with --backend cpu's"
	for r in single cast-first; do
		for be in cpu cuda auto; do
			best=
			for i in 1 2 3; do
				rm -rf "$work/out-$r-$be"
				t0=$EPOCHREALTIME
				timeout 300 "$bin" export --quiet --rounding "$r" --backend "$be" \
					"$spec" "$work/out-$r-$be" || { ok=0; break; }
				best=$(min "$(since "$t0")" "$best")
			done
			[ "$be" = auto ] && "$bin" export --rounding "$r" --backend auto "$spec" \
				"$work/auto-line" 2>&1 | grep backend
			rm -rf "$work/auto-line"
			bytes=$(du -cb "$work/out-$r-$be"/*.safetensors 2>/dev/null | tail -1 | cut -f1)
			if diff -rq "$work/out-$r-cpu" "$work/out-$r-$be" >/dev/null; then t=same; else t=DIFFERENT; ok=0; fi
			printf '  export %-10s %-5s %8s s %8.2f GB/s  %s\n' "$r" "$be" "$best" \
				"$(awk -v n="${bytes:-0}" -v s="${best:-1}" 'BEGIN { print n / s / 1e9 }')" "$t"
		done
	done
	echo "export with 2 threads (a machine with few cores), best of 2"
	for r in single cast-first; do
		for be in cpu cuda; do
			best=
			for i in 1 2; do
				rm -rf "$work/t2"
				t0=$EPOCHREALTIME
				timeout 300 "$bin" export --quiet --threads 2 --rounding "$r" --backend "$be" \
					"$spec" "$work/t2" || { ok=0; break; }
				best=$(min "$(since "$t0")" "$best")
			done
			if diff -rq "$work/out-$r-cpu" "$work/t2" >/dev/null; then t=same; else t=DIFFERENT; ok=0; fi
			printf '  export %-10s %-5s %8s s  %s\n' "$r" "$be" "$best" "$t"
		done
	done
	rm -rf "$work/t2"
	if [ ! -e /dev/fuse ]; then
		echo "no /dev/fuse: mount not tried"
		[ $ok = 1 ]
		return
	fi
	mnt=$work/mnt
	mkdir -p "$mnt"
	bytes=$(du -cb "$work/out-single-cpu"/*.safetensors | tail -1 | cut -f1)
	echo "mount: a fresh mount per read of all merged shards (cat), best of 3; the last read compared"
	# v = backend[:min]: RESIDFS_GPU_MIN_ELEMENTS=min lets 1 MiB FUSE reads
	# (512 Ki bf16 elements) reach the GPU; the default keeps them on the CPU
	for v in cpu cuda cuda:65536 auto:65536; do
		best=
		for i in 1 2 3; do
			t=$(e2e_mount "$bin" "$spec" "$mnt" "$v" "$([ $i = 3 ] && echo 1)" "$work/out-single-cpu") ||
				{ echo "mount $v: FAILED"; ok=0; }
			best=$(min "$t" "$best")
		done
		printf '  mount %-12s %8s s %8.2f GB/s\n' "$v" "$best" \
			"$(awk -v n="$bytes" -v s="$best" 'BEGIN { print n / s / 1e9 }')"
	done
	[ $ok = 1 ]
}

bin=${RESIDFS_BIN:-}
[ -z "$bin" ] && [ -x "$build/fs/residfs" ] && bin=$build/fs/residfs
if [ -n "$bin" ]; then
	say "end to end: export and mount of a 1 GiB model with each backend"
	if e2e "$bin" "${E2E_DIR:-$build.e2e}"; then
		echo "end to end: PASS"
	else
		echo "end to end: FAIL"; status=1
	fi
else
	say "end to end: skipped (no residfs program: set RESIDFS_BIN)"
fi

say "done: test $([ $status = 0 ] && echo PASS || echo 'FAIL/SKIP'), build dir $build"
exit $status

#!/usr/bin/env bash
# tests/cuda/emu/run.sh - run tests/cuda/test_cuda.c against
# kernels/cuda/kern_cuda.cu compiled for the CPU (no GPU, no nvcc needed:
# g++ and gcc only).  Checks the kernels' arithmetic, the multi-pass and
# chunked stream pipeline and the context pool, not the GPU itself; then
# that a CUDA error in the middle of a batch is finished on the CPU with the
# right bytes (kernels/backend.c, tests/cuda/emu/test_fallback.c).
#
# usage: tests/cuda/emu/run.sh [out-dir]   (SANITIZE=address,undefined or
#        SANITIZE=thread adds -fsanitize; FAKE_FAIL_AT=n injects an error)
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
out=${1:-$(mktemp -d /tmp/residfs-cuda-emu.XXXXXX)}
san=()
[ -n "${SANITIZE:-}" ] && san=("-fsanitize=$SANITIZE")
mkdir -p "$out"
cd "$root"
# the only non-C++ syntax: kernel launches
sed -E 's/(rfs_cuda_kernel<[^>]*>)<<<nb, RFS_CUDA_BLOCK, 0, st>>>\(\*a\);/fake_launch(\1, nb, RFS_CUDA_BLOCK, st, *a);/' \
	kernels/cuda/kern_cuda.cu >"$out/kern_cuda_emu.cpp"
[ "$(grep -c fake_launch "$out/kern_cuda_emu.cpp")" = 6 ] ||
	{ echo "run.sh: kernel launches not found in kern_cuda.cu"; exit 1; }
inc=(-Itests/cuda/emu -Ikernels -Ikernels/cuda)
g++ -std=c++17 -O2 -g "${san[@]}" -ffp-contract=off -Wno-unknown-pragmas "${inc[@]}" \
	-c "$out/kern_cuda_emu.cpp" -o "$out/kern_cuda_emu.o"
g++ -std=c++17 -O2 -g "${san[@]}" "${inc[@]}" -c tests/cuda/emu/fake.cpp -o "$out/fake.o"
for f in kern kern_scalar; do
	gcc -std=gnu11 -O2 -g "${san[@]}" -ffp-contract=off -D_GNU_SOURCE "${inc[@]}" \
		-c "kernels/$f.c" -o "$out/$f.o"
done
gcc -std=gnu11 -O2 -g "${san[@]}" -ffp-contract=off -D_GNU_SOURCE "${inc[@]}" \
	-c tests/cuda/test_cuda.c -o "$out/test_cuda.o"
# the CUDA layer logs its errors with core/log.c (with core/err.c, the bottom library)
for f in core/log.c core/err.c; do
	gcc -std=gnu11 -O2 -g "${san[@]}" -D_GNU_SOURCE -c "$f" -o "$out/$(basename "$f" .c).o"
done
g++ "${san[@]}" -o "$out/test_cuda_emu" "$out/test_cuda.o" "$out/kern_cuda_emu.o" \
	"$out/fake.o" "$out/kern.o" "$out/kern_scalar.o" "$out/log.o" "$out/err.o" -lxxhash -lpthread
# the backend's fallback: an error injected mid-batch (tests/cuda/emu/test_fallback.c);
# the backend reports with core/err.c, the error library below kernels/
for f in kernels/backend.c tests/cuda/emu/test_fallback.c; do
	gcc -std=gnu11 -O2 -g "${san[@]}" -ffp-contract=off -D_GNU_SOURCE -DRFS_HAVE_CUDA=1 \
		"${inc[@]}" -c "$f" -o "$out/$(basename "$f" .c).o"
done
g++ "${san[@]}" -o "$out/test_fallback" "$out/test_fallback.o" "$out/backend.o" "$out/err.o" \
	"$out/log.o" "$out/kern_cuda_emu.o" "$out/fake.o" "$out/kern.o" "$out/kern_scalar.o" -lxxhash -lpthread
"$out/test_cuda_emu"
FAKE_FAIL_AT=3 "$out/test_fallback" cuda
FAKE_FAIL_AT=3 "$out/test_fallback" auto

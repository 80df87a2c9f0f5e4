#!/usr/bin/env bash
# Runs the tests against mergekit (tests/merge): installs
# tests/requirements-merge.txt into a virtual environment kept out of git and
# reused between runs (~/.cache/residfs/venv-merge-<hash of the file>), then
# runs pytest on tests/merge.  Arguments are passed to pytest.
#
# Environment:
#   RESIDFS_BIN         the residfs binary (default: <repo>/$BUILD_DIR/fs/residfs)
#   BUILD_DIR           meson build directory (default: build)
#   RESIDFS_MERGE_VENV  a virtual environment to use as it is
#   RESIDFS_MERGE_ZOO   a directory for the test models (default: a temporary one)
# Exit status: pytest's, or 3 when the environment cannot be made.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
. tests/pyenv.sh
rfs_pyenv merge RESIDFS_MERGE_VENV tests/requirements-merge.txt
export RESIDFS_BIN=${RESIDFS_BIN:-$root/${BUILD_DIR:-build}/fs/residfs}
exec "$venv/bin/pytest" -q -p no:cacheprovider tests/merge "$@"

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
req=tests/requirements-merge.txt
if [ -n "${RESIDFS_MERGE_VENV:-}" ]; then
	venv=$RESIDFS_MERGE_VENV
	if [ ! -x "$venv/bin/pytest" ]; then
		echo "tests/merge: no pytest in RESIDFS_MERGE_VENV=$venv" >&2
		exit 3
	fi
else
	venv=$HOME/.cache/residfs/venv-merge-$(sha256sum "$req" | cut -c1-12)
	# the marker is written only after a complete install: a broken one is redone
	if [ ! -f "$venv/.residfs-installed" ]; then
		rm -rf "$venv"
		mkdir -p "$(dirname "$venv")"
		if ! { python3 -m venv "$venv" &&
			"$venv/bin/pip" install -q --disable-pip-version-check -r "$req"; }; then
			echo "tests/merge: could not install $req into $venv" >&2
			exit 3
		fi
		touch "$venv/.residfs-installed"
	fi
fi
export RESIDFS_BIN=${RESIDFS_BIN:-$root/${BUILD_DIR:-build}/fs/residfs}
exec "$venv/bin/pytest" -q -p no:cacheprovider tests/merge "$@"

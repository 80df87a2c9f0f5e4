#!/usr/bin/env bash
# tests/venv.sh - prints the path of the Python environment of the
# integration tests, making it on first use: tests/requirements-core.txt
# installed into ~/.cache/residfs/venv-<hash of that file> (or
# $RESIDFS_VENV, used as it is when set).  The marker file is written only
# after a complete install, so a broken one is made again.  Shared by
# tests/run.sh and tests/sanitize.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
req=tests/requirements-core.txt
if [ -n "${RESIDFS_VENV:-}" ]; then
	echo "$RESIDFS_VENV"
	exit 0
fi
venv=$HOME/.cache/residfs/venv-$(sha256sum "$req" | cut -c1-12)
if [ ! -f "$venv/.residfs-installed" ]; then
	rm -rf "$venv"
	mkdir -p "$(dirname "$venv")"
	if python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2; then
		touch "$venv/.residfs-installed"
	else
		echo "could not install $req" >&2
	fi
fi
echo "$venv"

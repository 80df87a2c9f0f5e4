#!/usr/bin/env bash
# Installs the Debian packages residfs needs to build, run and test.
# Idempotent: does nothing when everything is already installed.
# Needs root (or sudo) only when something is missing.
set -euo pipefail

# clang and libclang-rt-14-dev (libFuzzer and clang's sanitizer runtimes, only
# recommended by clang): the fuzz targets (tests/fuzz); gcc's ASan/UBSan/TSan
# runtimes come with gcc.  nginx-light (with its echo module) and openssl: the
# web server and TLS certificate of the remote-source tests (tests/remote).
# util-linux (mount, unshare) and systemd (systemd-analyze): the fstab and
# unit tests (tests/integration/test_ecosystem.py).
pkgs=(meson ninja-build pkg-config gcc g++ libfuse3-dev fuse3 libcjson-dev libxxhash-dev
      libcmocka-dev libcurl4-openssl-dev libyaml-dev python3 python3-venv clang libclang-rt-14-dev
      nginx-light openssl util-linux systemd)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
echo "bootstrap: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

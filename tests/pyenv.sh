# tests/pyenv.sh - sourced by the run.sh of the suites that need a Python
# environment of their own (tests/hf, tests/vllm, tests/merge).
#
# rfs_pyenv SUITE VAR REQ [NODEPS]
#   sets $venv: the environment named by the variable VAR when the caller
#   set it (used as it is, never changed; it must have pytest), else
#   ~/.cache/residfs/venv-SUITE-<hash of REQ and NODEPS>, made on first use:
#   REQ installed, then NODEPS with --no-deps (pip flags from
#   $pyenv_pip_flags, a size for the message from $pyenv_size).  A marker
#   file is written only after a complete install, so a broken one is made
#   again.  Exits 3 when the environment cannot be had.
rfs_pyenv() {
	local suite=$1 var=$2 req=$3 nodeps=${4:-} what hash start
	local -a pip

	if [ -n "${!var:-}" ]; then
		venv=${!var}
		if [ ! -x "$venv/bin/pytest" ]; then
			echo "tests/$suite: no pytest in $var=$venv" >&2
			exit 3
		fi
		return 0
	fi
	hash=$(cat "$req" ${nodeps:+"$nodeps"} | sha256sum | cut -c1-12)
	venv=$HOME/.cache/residfs/venv-$suite-$hash
	[ -f "$venv/.residfs-installed" ] && return 0
	what="$req${nodeps:+ and $nodeps}"
	rm -rf "$venv"
	mkdir -p "$(dirname "$venv")"
	echo "tests/$suite: installing $what into $venv (once${pyenv_size:+; $pyenv_size})" >&2
	start=$(date +%s)
	# shellcheck disable=SC2206 # the flags are words on purpose
	pip=("$venv/bin/pip" install -q --disable-pip-version-check ${pyenv_pip_flags:-})
	if ! { python3 -m venv "$venv" && "${pip[@]}" -r "$req" &&
		{ [ -z "$nodeps" ] || "${pip[@]}" --no-deps -r "$nodeps"; }; }; then
		echo "tests/$suite: could not install $what into $venv" >&2
		exit 3
	fi
	touch "$venv/.residfs-installed"
	echo "tests/$suite: installed in $(($(date +%s) - start)) s" >&2
}

#!/bin/sh
# Dependencies among the core objects, read off their symbols with nm.
#
#   tests/deps.sh ARCHIVE [-v]
#
# An object depends on another when it references a symbol the other
# defines.  Fails when the objects depend on each other in a circle, or
# when one of the objects listed in $only depends on another than those
# listed for it: the block cache knows nothing of how a block is made
# (read.c hands it a fill function), the bus guard nothing of what reads
# under it.  -v prints every edge.
#
#   fs -> read (virtual files, computing tensors) -> {cache, busguard, backend -> kernels}
set -eu

archive=${1:?usage: deps.sh ARCHIVE [-v]}
verbose=${2:-}
only='cache:buf,err busguard:'

command -v nm >/dev/null 2>&1 || { echo "deps.sh: nm not found: skipped"; exit 77; }
[ -f "$archive" ] || { echo "deps.sh: $archive: no such file" >&2; exit 1; }

nm -P -A "$archive" | awk -v verbose="$verbose" -v only="$only" '
# "ARCHIVE[DIR/NAME.c.o]: SYMBOL TYPE ..." -> object NAME
function object(f,    m) {
	m = f
	sub(/^.*\[/, "", m)
	sub(/\]:$/, "", m)
	sub(/^.*\//, "", m)
	sub(/\.o$/, "", m)
	sub(/\.c$/, "", m)
	return m
}
{
	o = object($1)
	objs[o] = 1
	if ($3 == "U" || $3 == "w" || $3 == "v")
		uses[o, $2] = 1
	else if ($3 ~ /^[TDBRCGSVWi]$/) {
		def[$2] = o
		ndef++
	}
}
END {
	if (!ndef) { # LTO objects, say: nothing to read
		print "deps.sh: no symbols defined in the archive: skipped"
		exit 77
	}
	for (k in uses) {
		split(k, p, SUBSEP)
		if ((p[2] in def) && def[p[2]] != p[1] && !((p[1], def[p[2]]) in edge)) {
			edge[p[1], def[p[2]]] = p[2]
			out[p[1]]++
		}
	}
	bad = 0
	if (verbose != "")
		for (k in edge) {
			split(k, p, SUBSEP)
			printf "%s -> %s (%s)\n", p[1], p[2], edge[k]
		}
	n = split(only, rule, " ")
	for (i = 1; i <= n; i++) {
		split(rule[i], p, ":")
		for (k in edge) {
			split(k, q, SUBSEP)
			if (q[1] == p[1] && index("," p[2] ",", "," q[2] ",") == 0) {
				printf "deps.sh: %s may depend only on {%s}, but uses %s of %s\n", p[1], p[2],
				       edge[k], q[2]
				bad = 1
			}
		}
	}
	# peel off objects that depend on nothing left ...
	left = 0
	for (o in objs)
		left++
	do {
		changed = 0
		for (o in objs) {
			if (out[o] > 0)
				continue
			delete objs[o]
			left--
			changed = 1
			for (k in edge) {
				split(k, p, SUBSEP)
				if (p[2] == o && (p[1] in objs))
					out[p[1]]--
			}
		}
	} while (changed)
	# and those that nothing left depends on: they only lead into a circle
	for (k in edge) {
		split(k, p, SUBSEP)
		if ((p[1] in objs) && (p[2] in objs))
			in_[p[2]]++
	}
	do {
		changed = 0
		for (o in objs) {
			if (in_[o] > 0)
				continue
			delete objs[o]
			left--
			changed = 1
			for (k in edge) {
				split(k, p, SUBSEP)
				if (p[1] == o && (p[2] in objs))
					in_[p[2]]--
			}
		}
	} while (changed)
	if (left > 0) {
		printf "deps.sh: these objects depend on each other in a circle:"
		for (o in objs)
			printf " %s", o
		printf "\n"
		for (k in edge) {
			split(k, p, SUBSEP)
			if ((p[1] in objs) && (p[2] in objs))
				printf "  %s -> %s (%s)\n", p[1], p[2], edge[k]
		}
		bad = 1
	}
	if (!bad)
		print "deps.sh: no circle; cache and busguard depend only on what they may"
	exit bad
}'

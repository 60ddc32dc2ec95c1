#!/usr/bin/env bash
# checkpatch.pl --strict on every .c/.h under kernel/ (our own code only: the
# upstream sources the build copies in never live here). Uses the checkpatch
# of the guest kernel's source, extracted by harness/build-modules.sh --tools.
# Exit status: 0 if clean, 1 on any error, warning or check.
set -Eeuo pipefail
KDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOLS=$("$KDIR/../harness/build-modules.sh" --tools | tail -n1)
[[ -f $TOOLS/checkpatch.pl ]] || { echo "check.sh: no checkpatch.pl in '$TOOLS'" >&2; exit 2; }

rc=0
while IFS= read -r -d '' f; do
	# compat.h files hold the kernel version tests of out-of-tree modules
	# built for two kernels (what checkpatch discourages for in-tree code)
	ign=()
	[[ ${f##*/} == compat.h ]] && ign=(--ignore LINUX_VERSION_CODE,CONSTANT_COMPARISON)
	out=$(perl "$TOOLS/checkpatch.pl" --no-tree --strict --terse --show-types "${ign[@]}" -f "$f" 2>&1) || rc=1
	# --terse: one line per problem plus a "total:" line, nothing when clean
	if grep -v '^total: 0 errors, 0 warnings, 0 checks' <<<"$out" | grep -q .; then
		printf '%s\n' "$out"
		rc=1
	fi
done < <(find "$KDIR" -type f \( -name '*.c' -o -name '*.h' \) -print0 | LC_ALL=C sort -z)
[[ $rc -eq 0 ]] && echo "check.sh: checkpatch clean"
exit "$rc"

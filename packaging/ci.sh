#!/usr/bin/env bash
# packaging/ci.sh: what CI does with the Debian package: build it, check it
# with lintian, install it with dpkg -i, run the end-to-end suite against the
# installed /usr/bin/onionmx and its installed Postfix example, remove it with
# dpkg -r and check that nothing of it is left. As root, on Debian.
#
# Usage: packaging/ci.sh [SCENARIO...]   (the e2e scenarios; default all)
#
# It installs lintian if missing, and refuses to run where onionmx is
# installed already. Whatever happens, it purges the package and deletes the
# onionmx user and group if it made them, leaving the machine as it found it.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'packaging/ci.sh: %s\n' "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run it as root: it installs the package"
if dpkg-query -W -f '${db:Status-Status}' onionmx 2>/dev/null | grep -qv '^not-installed$'; then
	die "onionmx is installed on this machine already; this test would replace and then remove it"
fi
had_user=$(getent passwd onionmx || true)
had_group=$(getent group onionmx || true)

cleanup() {
	dpkg --purge onionmx >/dev/null 2>&1 || true
	# The package leaves its user, as Debian does; a test leaves nothing.
	if [[ -z $had_user ]] && getent passwd onionmx >/dev/null; then userdel onionmx; fi
	if [[ -z $had_group ]] && getent group onionmx >/dev/null; then groupdel onionmx; fi
}
trap cleanup EXIT

say "building the package"
deb=$(bash packaging/deb.sh)
version=$(dpkg-deb -f "$deb" Version)

say "lintian (overrides, with their reasons, are in packaging/lintian-overrides)"
if ! command -v lintian >/dev/null 2>&1; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q lintian >/dev/null ||
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q lintian >/dev/null; }
fi
# Every tag lintian knows, pedantic and experimental ones included, fails.
lintian --fail-on error,warning,info,pedantic,experimental --display-info --pedantic --display-experimental "$deb" ||
	die "lintian (above)"

say "dpkg -i $deb"
dpkg -i "$deb"
[[ $(/usr/bin/onionmx --version </dev/null) == "onionmx version $version" ]] ||
	die "onionmx --version says '$(/usr/bin/onionmx --version </dev/null)', want 'onionmx version $version'"
getent passwd onionmx >/dev/null || die "no onionmx user after installing"
[[ $(getent passwd onionmx | cut -d: -f7) == /usr/sbin/nologin ]] || die "the onionmx user may log in: $(getent passwd onionmx)"
files=$(dpkg-query -L onionmx)

say "end to end, with the installed binary and example"
ONIONMX_BIN=/usr/bin/onionmx \
	ONIONMX_MASTER_EXAMPLE=/usr/share/doc/onionmx/examples/postfix-master.cf.example \
	bash e2e/run.sh "$@" </dev/null

say "dpkg -r onionmx"
dpkg -r onionmx
# No conffiles, nothing made at run time: removing leaves nothing, and dpkg
# forgets the package (a package with conffiles would stay config-files).
status=$(dpkg-query -W -f '${db:Status-Status}' onionmx 2>/dev/null || echo not-installed)
[[ $status == not-installed ]] || die "after dpkg -r, dpkg says onionmx is $status"
left=$(while read -r f; do
	if [[ -e $f && ! -d $f ]]; then echo "$f"; fi
done <<<"$files")
[[ -z $left ]] || die "left after dpkg -r: $left"
[[ ! -e /usr/share/doc/onionmx ]] || die "left after dpkg -r: /usr/share/doc/onionmx"
say "installed, ran end to end, removed: nothing left but the onionmx user, which Debian leaves"

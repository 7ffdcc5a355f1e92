#!/usr/bin/env bash
# packaging/deb.sh: build the Debian package, packaging/build/onionmx_VERSION_ARCH.deb,
# with nfpm (packaging/nfpm.yaml), and print its path.
#
# Environment:
#   VERSION=V       the package's version (default: X.Y.Z from a tag vX.Y.Z on
#                   HEAD, else 0.0~gitYYYYMMDD.HASH from HEAD's commit; +modified
#                   when tracked files differ from it)
#   ARCH=A          Debian architecture to build for (default: this machine's)
#   DEBFULLNAME, DEBEMAIL
#                   the maintainer, as dch takes them (default: HEAD's committer)
set -euo pipefail

# nfpm, run from the module proxy like any Go module: the only tool this
# needs besides Go, gzip and git.
NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || PATH=/usr/local/go/bin:$PATH
BUILD=packaging/build

say() { printf 'deb.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

git rev-parse --verify -q HEAD >/dev/null || die "not a git checkout: set VERSION, DEBFULLNAME and DEBEMAIL (and SOURCE_DATE_EPOCH)"
# Dates from HEAD's commit, not the clock: the same commit gives the same package.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
if [[ -z ${VERSION:-} ]]; then
	if tag=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null); then
		VERSION=${tag#v}
	else
		VERSION=0.0~git$(git log -1 --date=format:%Y%m%d --format=%cd).$(git rev-parse --short=7 HEAD)
	fi
	git diff --quiet HEAD -- || VERSION+=+modified
fi
[[ $VERSION =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "VERSION=$VERSION is not a Debian version without a revision"
MAINTAINER="${DEBFULLNAME:-$(git log -1 --format=%cn)} <${DEBEMAIL:-$(git log -1 --format=%ce)}>"
ARCH=${ARCH:-$(dpkg --print-architecture)}
GOARM=
case $ARCH in
amd64 | arm64 | riscv64 | s390x) GOARCH=$ARCH ;;
i386) GOARCH=386 ;;
armhf) GOARCH=arm GOARM=7 ;;
ppc64el) GOARCH=ppc64le ;;
*) die "ARCH=$ARCH: no Go architecture known for it" ;;
esac
export VERSION ARCH MAINTAINER

rm -rf "$BUILD"
mkdir -p "$BUILD"

say "building onionmx $VERSION for $ARCH with $(go version)"
# Static and without urfave/cli's doc generators, as the README builds it;
# stripped (-s -w), as Debian ships binaries: a panic's stack trace keeps its
# function names and lines, which come from Go's own tables; the version
# stamped in for onionmx --version.
CGO_ENABLED=0 GOOS=linux GOARCH=$GOARCH GOARM=$GOARM \
	go build -trimpath -tags urfave_cli_no_docs -ldflags "-s -w -X main.version=$VERSION" -o "$BUILD/onionmx" .

# Every module compiled in must be in the copyright file.
missing=$(go version -m "$BUILD/onionmx" | awk '$1 == "dep" { print $2 }' | while read -r mod; do
	grep -qF " vendor/$mod/*" packaging/copyright || echo "$mod"
done)
[[ -z $missing ]] || die "modules compiled in that packaging/copyright does not name: $missing"

gzip -9n <onionmx.8 >"$BUILD/onionmx.8.gz"
gzip -9n <README.md >"$BUILD/README.md.gz"
# No release has a changelog of its own yet: one entry for the commit built.
{
	printf 'onionmx (%s) unstable; urgency=medium\n\n' "$VERSION"
	printf '  * Built from commit %s.\n' "$(git rev-parse HEAD)"
	printf '    No release yet: the git history is the changelog.\n\n'
	printf ' -- %s  %s\n' "$MAINTAINER" "$(git log -1 --format=%cD)"
} | gzip -9n >"$BUILD/changelog.gz"

say "packaging with nfpm"
# nfpm wants Go 1.25: auto lets an older go command fetch that toolchain,
# also where GOTOOLCHAIN names Go 1.24.8 for onionmx's build above.
GOTOOLCHAIN=auto go run "$NFPM" package -f packaging/nfpm.yaml -p deb -t "$BUILD/" >&2
deb="$BUILD/onionmx_${VERSION}_$ARCH.deb"
[[ -f $deb ]] || die "nfpm did not write $deb"
say "$(du -b "$deb" | cut -f1) bytes; the binary $(du -b "$BUILD/onionmx" | cut -f1)"
echo "$deb"

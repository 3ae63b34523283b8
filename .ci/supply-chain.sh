#!/usr/bin/env bash
# Supply-chain stage of CI, offline apart from the Go module proxy:
#   - builds the release binaries with the pinned Go toolchain (same flags as
#     the Dockerfile) into dist/;
#   - writes a CycloneDX SBOM of each binary (dist/sbom*.cdx.json);
#   - builds a govulncheck database from the pinned golang.org/x/vulndb module,
#     checks that it finds the known vulnerabilities of an older Go release,
#     and fails on any vulnerability the code calls (source and binaries).
#
# Run by .ci/run after the tests, or alone: bash .ci/supply-chain.sh
#
# Environment:
#   RELEASE_GO        toolchain of release builds and scans (default go1.26.11)
#   CI_TOOLS_DIR      where the tools are installed and reused
#                     (default ~/.cache/bluegreen-ci/bin)
#   VERSION           version stamped into the binaries (default dev)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Pinned versions.
RELEASE_GO="${RELEASE_GO:-go1.26.11}"
GOVULNCHECK_VERSION=v1.9.0
CYCLONEDX_GOMOD_VERSION=v1.10.0
# golang.org/x/vulndb has no tags: a pseudo-version pins one commit of its data.
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
# A release with known called standard-library vulnerabilities (net/http),
# to prove that the database finds them.
SELFTEST_GO=go1.26.8

export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
tools="${CI_TOOLS_DIR:-$HOME/.cache/bluegreen-ci/bin}"
dist="$root/dist"
mkdir -p "$tools" "$dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
section() { printf '\n---- supply chain: %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

# install MODULE_PATH/cmd/NAME@VERSION into $tools unless that version is there.
install_tool() {
  local pkg="$1" version="$2" name="${1##*/}"
  if [ -x "$tools/$name" ] && go version -m "$tools/$name" 2>/dev/null | awk '$1 == "mod" {print $3}' | grep -qx "$version"; then
    echo "$name $version (cached)"
    return
  fi
  echo "installing $name $version"
  (cd "$work" && GOBIN="$tools" GOTOOLCHAIN="$RELEASE_GO" go install "$pkg@$version")
}

section "tools"
GOTOOLCHAIN="$RELEASE_GO" go version
install_tool golang.org/x/vuln/cmd/govulncheck "$GOVULNCHECK_VERSION"
install_tool github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod "$CYCLONEDX_GOMOD_VERSION"

section "release binaries ($RELEASE_GO)"
version="${VERSION:-dev}"
for cmd in bluegreen demo-app; do
  GOTOOLCHAIN="$RELEASE_GO" CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X main.version=$version" -o "$dist/$cmd" "./cmd/$cmd"
  echo "$dist/$cmd: $(go version "$dist/$cmd" | awk '{print $2}'), $(stat -c %s "$dist/$cmd") bytes"
done

section "SBOM"
# bin mode reads the module list embedded in the binary (what shipped).
"$tools/cyclonedx-gomod" bin -json -version "$version" -output "$dist/sbom.cdx.json" "$dist/bluegreen"
"$tools/cyclonedx-gomod" bin -json -version "$version" -output "$dist/sbom-demo-app.cdx.json" "$dist/demo-app"
for f in "$dist/sbom.cdx.json" "$dist/sbom-demo-app.cdx.json"; do
  jq -e '.bomFormat == "CycloneDX" and (.components | length > 0)' "$f" >/dev/null || { echo "FAIL: $f is not a CycloneDX SBOM"; exit 1; }
  echo "$f: CycloneDX $(jq -r .specVersion "$f"), $(jq '.components | length' "$f") components"
done

section "vulnerability database (golang.org/x/vulndb@$VULNDB_VERSION)"
# Outside the module, so that go.mod and go.sum stay as they are.
dir=$(cd "$work" && go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | jq -r .Dir)
# The OSV files carry no modification times; the commit time of the pinned
# version dates the database.
modified=$(cd "$work" && go list -m -json "golang.org/x/vulndb@$VULNDB_VERSION" | jq -r .Time)
db="$work/vulndb"
go run ./docker/tools/vulndb -osv "$dir/data/osv" -out "$db" -modified "$modified"

section "database self-test ($SELFTEST_GO)"
# A database that matches nothing would pass every scan: the same source
# with a Go release that has known called vulnerabilities must fail.
rc=0
GOTOOLCHAIN="$SELFTEST_GO" "$tools/govulncheck" -db "file://$db" ./... >"$work/selftest.txt" 2>&1 || rc=$?
if [ "$rc" -ne 3 ] || ! grep -q 'Vulnerability #1' "$work/selftest.txt"; then
  tail -n 20 "$work/selftest.txt"
  echo "FAIL: the database finds nothing in $SELFTEST_GO (govulncheck exit $rc)"; exit 1
fi
echo "ok: $(grep -c '^Vulnerability #' "$work/selftest.txt") called vulnerabilities found with $SELFTEST_GO"

section "govulncheck"
# The source of every package, with the release toolchain: any vulnerability
# the code calls fails the stage.
GOTOOLCHAIN="$RELEASE_GO" "$tools/govulncheck" -db "file://$db" ./... | tee "$dist/govulncheck.txt"
# Then the binaries. The release binaries are stripped (-s -w), which leaves
# govulncheck no symbols, so it would only match modules; the same build
# with its symbol table kept shows which vulnerable functions are linked in.
for cmd in bluegreen demo-app; do
  GOTOOLCHAIN="$RELEASE_GO" CGO_ENABLED=0 go build -trimpath \
    -ldflags "-X main.version=$version" -o "$work/$cmd" "./cmd/$cmd"
  echo "== binary $cmd (built like dist/$cmd, symbols kept)" | tee -a "$dist/govulncheck.txt"
  GOTOOLCHAIN="$RELEASE_GO" "$tools/govulncheck" -db "file://$db" -mode binary "$work/$cmd" | tee -a "$dist/govulncheck.txt"
done

section "done"
ls -l "$dist"

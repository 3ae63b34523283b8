#!/usr/bin/env bash
# Fuzz stage: runs every fuzz target for a short fixed time (FUZZTIME,
# default 10s each). The seed corpora run as plain tests in `go test ./...`;
# here the fuzzer looks for new inputs. A failing input is written under the
# package's testdata/fuzz/ so it can be committed as a seed.
set -euo pipefail
cd "$(dirname "$0")/.."

case " ${GOFLAGS:-} " in
  *" -buildvcs=false "*) ;;
  *) export GOFLAGS="${GOFLAGS:-} -buildvcs=false" ;;
esac
fuzztime="${FUZZTIME:-10s}"

# package target, one a line
targets="
./admin FuzzParseSwitch
./cmd/bluegreen FuzzLoadConfig
./proxy FuzzRouterHeaders
./proxy/h1 FuzzParseRequest
./proxy/h1 FuzzParseResponse
./proxy/h1 FuzzGuard
./proxy FuzzFastServer
./proxy FuzzFastUpstream
./state FuzzDecode
"

# Every Fuzz function in the tree must be listed above.
found=$(grep -rhoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' . | sed 's/^func //' | sort)
listed=$(printf '%s\n' $targets | grep '^Fuzz' | sort)
if [ "$found" != "$listed" ]; then
  echo "fuzz targets in the tree and in .ci/fuzz.sh differ:"
  diff <(echo "$listed") <(echo "$found") || true
  exit 1
fi

while read -r pkg target; do
  [ -n "$pkg" ] || continue
  printf '\n---- %s %s (%s) ----\n' "$pkg" "$target" "$fuzztime"
  go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
done <<<"$targets"

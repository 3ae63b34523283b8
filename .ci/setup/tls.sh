# Sourced by .ci/run: Pebble, the ACME test CA, for the ACME tests in
# internal/certs (they read PEBBLE_BIN). Idempotent: installs once per version.
_pebble_version=v2.10.3
_pebble_dir="$(go env GOPATH)/tools/pebble-${_pebble_version}"
if [ ! -x "${_pebble_dir}/pebble" ]; then
  GOBIN="${_pebble_dir}" go install "github.com/letsencrypt/pebble/v2/cmd/pebble@${_pebble_version}"
fi
export PEBBLE_BIN="${_pebble_dir}/pebble"
unset _pebble_version _pebble_dir

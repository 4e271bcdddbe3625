#!/usr/bin/env bash
# Quick start, command 2: lint, type-check and run every test (the image build included).
#   dev/test.sh              everything, as CI runs it
#   dev/test.sh --no-image   skip the buildah image test (about 3.5 minutes on a first run)
#   dev/test.sh --without-gramine
#                            only pytest, as on a machine without Gramine: dev/without-gramine.sh
#                            hides this host's Gramine in a private mount namespace (root, or
#                            unprivileged user namespaces); the tests that need Gramine are
#                            skipped, named, even under CI=true. Nothing is installed. CI runs it
#                            after the full run. Lint, types and the image test do not use this
#                            host's Gramine (the image installs its own), so they are left out.
# Further arguments go to pytest (dev/test.sh --no-image tests/pipeline -x).
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
without_gramine=0
while [ $# -gt 0 ]; do
  case "$1" in
    --no-image) image=0; shift ;;
    --without-gramine) without_gramine=1; shift ;;
    *) break ;;
  esac
done

if [ "$without_gramine" = 1 ]; then
  echo "== pytest with this host's Gramine hidden (dev/without-gramine.sh)"
  exec "$ROOT/dev/without-gramine.sh" pytest "$@"
fi

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

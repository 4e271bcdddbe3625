# shellcheck shell=bash
# Sourced by dev/test.sh and tests/image/run.sh: the Gramine package for development and CI.
#
# The package lives in ../shared/gramine/ beside the clone (gramine_*.deb, with SHA256SUMS), as
# the issue that brought Gramine into the tests lays it out; Gramine's own repository is out of
# reach on these machines. For a git worktree, "the clone" is also the main clone the worktree
# belongs to. MSE_GRAMINE_DIR names another directory.
#
#   gramine_package ROOT    prints the package's path (checked against SHA256SUMS beside it), or
#                           nothing when there is none; returns 1 when the checksum is wrong
#   ensure_gramine ROOT     installs Gramine on this host from that package if it is missing;
#                           with CI=true a missing Gramine is an error, otherwise it says plainly
#                           that the tests needing Gramine will be skipped

gramine_package() {
    local root="$1" common dir deb found=""
    local dirs=()
    if [ -n "${MSE_GRAMINE_DIR:-}" ]; then dirs+=("$MSE_GRAMINE_DIR"); fi
    dirs+=("$root/../shared/gramine")
    common="$(git -C "$root" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)"
    if [ -n "$common" ]; then dirs+=("$(dirname "$common")/../shared/gramine"); fi
    for dir in "${dirs[@]}"; do
        for deb in "$dir"/gramine_*.deb; do
            # The glob sorts: the last match is the highest version of a same-named series.
            if [ -f "$deb" ]; then found="$deb"; fi
        done
        if [ -n "$found" ]; then break; fi
    done
    [ -n "$found" ] || return 0
    found="$(realpath "$found")"
    dir="$(dirname "$found")"
    if [ -f "$dir/SHA256SUMS" ]; then
        # Fail closed: a package that SHA256SUMS does not vouch for is not installed.
        local want have
        want="$(awk -v f="$(basename "$found")" '$2 == f || $2 == "*" f { print $1 }' "$dir/SHA256SUMS")"
        have="$(sha256sum "$found" | cut -d' ' -f1)"
        if [ -z "$want" ] || [ "$want" != "$have" ]; then
            echo "error: $found does not match $dir/SHA256SUMS: not using it" >&2
            return 1
        fi
    fi
    echo "$found"
}

ensure_gramine() {
    local root="$1" deb sudo=()
    if command -v gramine-direct >/dev/null && command -v gramine-sgx-sign >/dev/null; then
        echo "Gramine: $(gramine-direct --version 2>/dev/null | head -n 1)"
        return 0
    fi
    deb="$(gramine_package "$root")" || return 1
    if [ -z "$deb" ]; then
        if [ "${CI:-}" = true ]; then
            echo "error: CI=true and Gramine is missing: put gramine_*.deb (with SHA256SUMS) in ../shared/gramine/ beside the clone, or install Gramine" >&2
            return 1
        fi
        echo "Gramine is not installed and there is no package in ../shared/gramine/: the tests that need Gramine will be skipped (pytest lists them as skipped, with the reason)"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo)
        else
            echo "Gramine is not installed; installing $deb needs root (run: sudo apt-get install -y $deb)" >&2
            if [ "${CI:-}" = true ]; then return 1; fi
            echo "the tests that need Gramine will be skipped (pytest lists them as skipped, with the reason)"
            return 0
        fi
    fi
    echo "installing Gramine from $deb ..."
    # apt-get, not dpkg -i: the package pulls its Python dependencies from the distribution.
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >/dev/null
    echo "Gramine: $(gramine-direct --version 2>/dev/null | head -n 1)"
}

#!/usr/bin/env bash
# Run a command as on a machine that never had Gramine, on one that has it:
#   dev/without-gramine.sh CMD [ARGS...]      e.g. dev/without-gramine.sh ./dev/demo.sh
# dev/test.sh --without-gramine runs the tests this way, and .ci/run does so after the full run:
# the quick start must hold without Gramine (its tests skipped, each named), and nothing else may
# quietly depend on it.
#
# Gramine's files are hidden in a private mount namespace, so nothing outside CMD notices: a
# read-only overlay over /usr whose top layer holds only whiteouts for them. That is every file of
# the gramine package (its directories named after Gramine whole), the gramine-* tools PATH finds,
# the graminelibos Python package and the library directories mse-run looks in. They are then
# absent, not merely unusable, to every means of finding them (PATH, import, a stat); /usr is
# read-only meanwhile. Before running CMD the script checks that the tools, the Python package and
# the library directories are gone and, when mse-run is on PATH, that `mse-run --version` says
# "Gramine: not installed"; otherwise it stops.
#
# CMD runs with MSE_GRAMINE_HIDDEN=1: the tests that need Gramine then skip, even under CI=true
# (where a missing Gramine fails them), and fail if Gramine is visible after all.
#
# Needs root (unshare --mount), or, for a user, unprivileged user namespaces (unshare
# --map-root-user --mount; CMD then runs as that user again where util-linux >= 2.38 allows, else
# as root inside the namespace). Gramine must be under /usr. Without Gramine, CMD just runs.
set -euo pipefail

self="$(realpath "${BASH_SOURCE[0]}")"
die() { echo "dev/without-gramine.sh: $*" >&2; exit 1; }
[ $# -gt 0 ] || die "usage: dev/without-gramine.sh CMD [ARGS...]"

# Where mse-run looks for Gramine's library directory (GRAMINE_LIBDIR_CANDIDATES in
# src/mse_base/_internal/enclave/manifest.py) and the tools the product and the tests use.
libdirs=(/usr/lib/x86_64-linux-gnu/gramine /usr/local/lib/x86_64-linux-gnu/gramine /usr/lib/gramine)
tools=(gramine-direct gramine-sgx gramine-sgx-sign gramine-sgx-sigstruct-view gramine-manifest)

# Prints Gramine's entries on this machine, one a line, parent directories resolved (/bin is
# /usr/bin on a merged-/usr system) but not the entries themselves (a library's symlink is hidden,
# not its target).
gramine_entries() {
    local path dir name
    {
        if [ "$(dpkg-query -W -f '${Status}' gramine 2>/dev/null)" = "install ok installed" ]; then
            while IFS= read -r path; do
                if [ -d "$path" ] && [ ! -L "$path" ]; then
                    case "${path##*/}" in *gramine*) echo "$path" ;; esac
                elif [ -e "$path" ] || [ -L "$path" ]; then
                    echo "$path"
                fi
            done < <(dpkg-query -L gramine)
        fi
        # A build from source installs under /usr/local, out of dpkg's sight.
        local pathdirs=()
        IFS=: read -ra pathdirs <<<"$PATH"
        for dir in "${pathdirs[@]}"; do
            for path in "$dir"/gramine-* "$dir"/is-sgx-available; do
                if [ -e "$path" ]; then echo "$path"; fi
            done
        done
        for dir in "${libdirs[@]}"; do
            if [ -e "$dir" ]; then echo "$dir"; fi
        done
        # The Python package of Gramine's tools, with its metadata and its offsets module.
        if [ -x /usr/bin/python3 ]; then
            /usr/bin/python3 - <<'PY' 2>/dev/null || true
import importlib.util
from pathlib import Path

spec = importlib.util.find_spec("graminelibos")
if spec is not None and spec.origin is not None:
    package = Path(spec.origin).parent
    print(package)
    for path in package.parent.glob("*graminelibos*"):
        print(path)
PY
        fi
    } | while IFS= read -r path; do
        [ -n "$path" ] || continue
        dir="$(dirname "$path")"
        name="$(basename "$path")"
        dir="$(realpath -e "$dir" 2>/dev/null)" || continue
        echo "$dir/$name"
    done | LC_ALL=C sort -u
}

# Makes DIR (a path under /usr) in the whiteout layer with the mode and owner of the real one:
# the overlay shows the top layer's directory attributes (hide() copies the times last).
layer_dir() {
    local layer="$1" path="" part parts=()
    IFS=/ read -ra parts <<<"$2"
    for part in "${parts[@]}"; do
        if [ -z "$part" ] || [ "$part" = . ]; then continue; fi
        path="$path/$part"
        if [ ! -d "$layer$path" ]; then
            mkdir "$layer$path"
            chmod --reference="/usr$path" "$layer$path"
            chown --reference="/usr$path" "$layer$path" 2>/dev/null || true
        fi
    done
}

layer=""
discard_layer() {
    if [ -n "$layer" ]; then
        umount --lazy "$layer" 2>/dev/null || true
        rmdir "$layer" 2>/dev/null || true
        layer=""
    fi
}

hide() {
    local entries=() kept=() entry other rel
    mapfile -t entries < <(gramine_entries)
    # An entry inside a hidden directory needs no whiteout of its own.
    for entry in "${entries[@]}"; do
        for other in "${entries[@]}"; do
            if [[ "$entry" == "$other"/* ]]; then continue 2; fi
        done
        [[ "$entry" == /usr/* ]] || die "Gramine's $entry is outside /usr: this script hides only /usr"
        kept+=("$entry")
    done
    [ ${#kept[@]} -gt 0 ] || die "found no Gramine to hide"
    layer="$(mktemp -d -t mse-without-gramine.XXXXXX)"
    trap discard_layer EXIT
    mount -t tmpfs -o mode=0755 mse-without-gramine "$layer" \
        || die "cannot mount a tmpfs for the whiteouts on $layer"
    chmod --reference=/usr "$layer"
    for entry in "${kept[@]}"; do
        rel="${entry#/usr/}"
        layer_dir "$layer" "$(dirname "$rel")"
        mknod "$layer/$rel" c 0 0  # a whiteout: overlayfs shows nothing there
    done
    while IFS= read -r -d '' rel; do
        touch -r "/usr/$rel" "$layer/$rel"
    done < <(cd "$layer" && find . -type d -print0)
    mount -t overlay mse-without-gramine -o "lowerdir=$layer:/usr" /usr \
        || die "cannot mount an overlay on /usr (overlayfs missing? for a user: Linux 5.11 or later)"
    # The overlay holds on to its layer; the mount point is not needed any more.
    discard_layer
    trap - EXIT
    echo "Gramine hidden in this mount namespace: ${#kept[@]} entries under /usr" >&2
}

check_hidden() {
    local tool dir version
    for tool in "${tools[@]}"; do
        if command -v "$tool" >/dev/null; then
            die "$tool is still on PATH ($(command -v "$tool")) after hiding Gramine"
        fi
    done
    if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import graminelibos' 2>/dev/null; then
        die "/usr/bin/python3 still imports graminelibos after hiding Gramine"
    fi
    for dir in "${libdirs[@]}"; do
        if [ -e "$dir" ]; then die "$dir still exists after hiding Gramine"; fi
    done
    if command -v mse-run >/dev/null; then
        version="$(mse-run --version)" || die "mse-run --version failed after hiding Gramine"
        if ! grep -qx 'Gramine: not installed' <<<"$version"; then
            die "mse-run --version does not say 'Gramine: not installed' after hiding Gramine"
        fi
    fi
}

installed() {
    local tool dir
    for tool in "${tools[@]}"; do if command -v "$tool" >/dev/null; then return 0; fi; done
    for dir in "${libdirs[@]}"; do if [ -e "$dir" ]; then return 0; fi; done
    [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import graminelibos' 2>/dev/null
}

case "${_MSE_WITHOUT_GRAMINE_STAGE:-}" in
    "")
        if ! installed; then
            check_hidden
            echo "Gramine is not installed here: nothing to hide" >&2
            MSE_GRAMINE_HIDDEN=1 exec "$@"
        fi
        if [ "$(id -u)" -eq 0 ]; then
            if ! unshare --mount true 2>/dev/null; then
                die "hiding Gramine needs a private mount namespace, and unshare --mount fails here (a container without CAP_SYS_ADMIN?): run on the host, or in a container started with --cap-add SYS_ADMIN"
            fi
            _MSE_WITHOUT_GRAMINE_STAGE=root exec unshare --mount --propagation private -- \
                "$self" "$@"
        fi
        if ! unshare --map-root-user --mount true 2>/dev/null; then
            die "hiding Gramine needs root or unprivileged user namespaces, and unshare --map-root-user --mount fails here: run it as root (sudo -E $self ...)"
        fi
        _MSE_WITHOUT_GRAMINE_STAGE="user:$(id -u):$(id -g)" exec unshare --map-root-user \
            --mount -- "$self" "$@"
        ;;
    root | user:*)
        stage="$_MSE_WITHOUT_GRAMINE_STAGE"
        unset _MSE_WITHOUT_GRAMINE_STAGE
        hide
        check_hidden
        export MSE_GRAMINE_HIDDEN=1
        if [[ "$stage" == user:* ]]; then
            # Back to the caller's own user id, in a user namespace of its own that keeps this
            # mount namespace; util-linux before 2.38 cannot, and CMD then runs as root here.
            IFS=: read -r _ uid gid <<<"$stage"
            if unshare --help | grep -q -- --map-user; then
                exec unshare --user --map-user="$uid" --map-group="$gid" -- "$@"
            fi
            echo "unshare (util-linux < 2.38) cannot map $uid back: running as root in the namespace" >&2
        fi
        exec "$@"
        ;;
    *) die "unexpected _MSE_WITHOUT_GRAMINE_STAGE=$_MSE_WITHOUT_GRAMINE_STAGE" ;;
esac

#!/usr/bin/env bash
# Build the image's targets and the Flask example with buildah, then check them from inside
# containers. Needs root; idempotent; no Docker engine and no registry involved.
#
#   tests/image/run.sh
#
# 1. installs buildah, podman, debootstrap, apt-utils (and the other tools it uses) if missing;
# 2. makes a Debian base with debootstrap from this machine's apt mirror, once a day (the rootfs
#    tarball is cached under $MSE_IMAGE_CACHE, default /var/cache/mse-base-image/<date>/),
#    imported as localhost/debian-base:bookworm;
# 3. lints the Dockerfiles, builds `--target toolkit` as localhost/mse-base:test, both examples
#    on top of it (localhost/mse-flask:test, localhost/mse-fastapi:test), and `--target sgx-keys`
#    against a local server with keys made for the run;
# 4. runs the checks on those;
# 5. builds the Gramine stage, `--target mse-base`, from the Gramine package in ../shared/gramine/
#    beside the clone (dev/gramine.sh finds it), served as a signed apt repository on loopback,
#    with no Intel packages, and the Flask example on it; there: a real `mse-run --dry-run`
#    (MRENCLAVE equal to gramine-sgx-sigstruct-view's), gramine-direct itself, `mse-run --direct`,
#    pinned by mse-verify to that MRENCLAVE, and a second build from the same inputs giving the same
#    MRENCLAVE. Without the package this part is skipped, saying so (CI=true: a failure);
# 6. prints PASS/FAIL/SKIP per check and "N passed, N failed, N skipped"; exits 1 if any failed.
#
# What it cannot cover: Intel's packages, the official Gramine and Intel repositories (out of
# reach here), and SGX itself. docs/image.md says what each part proves.
#
# Servers run with `buildah run --isolation chroot --network host` (podman run cannot work on
# these machines: no CAP_SYS_RESOURCE); each runs in its own process group, which the EXIT trap
# ends.
# SC2016: the single-quoted scripts are run by another shell (bash -c, or sh -c in a container)
# and take their values as arguments; they must not expand here.
# shellcheck disable=SC2016
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# gramine_package: where ../shared/gramine/gramine_*.deb is, checked against its SHA256SUMS.
# shellcheck source=dev/gramine.sh
source "$repo/dev/gramine.sh"
cache_root="${MSE_IMAGE_CACHE:-/var/cache/mse-base-image}"
suite=bookworm
base_image="localhost/debian-base:$suite"
toolkit_image="localhost/mse-base:test"
flask_image="localhost/mse-flask:test"
fastapi_image="localhost/mse-fastapi:test"
ca_bundle=/etc/ssl/certs/ca-certificates.crt
started=$SECONDS

log() { printf '[image %4ss] %s\n' "$((SECONDS - started))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (buildah, debootstrap and chroot isolation need it)"

work="$(mktemp -d /tmp/mse-image-test.XXXXXX)"
containers=()
server_pgids=()

cleanup() {
    local pgid ctr
    trap '' INT TERM    # a second Ctrl-C must not cut the cleanup short
    for pgid in "${server_pgids[@]}"; do
        kill -TERM -- "-$pgid" 2>/dev/null || true
    done
    sleep 1
    for pgid in "${server_pgids[@]}"; do
        kill -KILL -- "-$pgid" 2>/dev/null || true
    done
    for ctr in "${containers[@]}"; do
        buildah rm "$ctr" >/dev/null 2>&1 || true
    done
    # gpg may have started an agent for the throwaway keyring: end it with its home.
    if [ -d "$work/gnupg" ]; then GNUPGHOME="$work/gnupg" gpgconf --kill all 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. tools --------------------------------------------------------------------------------
need=()
for tool in buildah podman debootstrap curl openssl gpg shellcheck apt-ftparchive; do
    if ! command -v "$tool" >/dev/null; then
        case "$tool" in
            gpg) need+=(gnupg) ;;
            apt-ftparchive) need+=(apt-utils) ;;
            *) need+=("$tool") ;;
        esac
    fi
done
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- 2. the Debian base, once a day ----------------------------------------------------------
# The mirror is this machine's own (its deb822 apt sources), never a host named in this file.
apt_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        # deb822 stanzas are separated by blank lines; take the first URI of a stanza that
        # carries the plain suite (not -security or -updates).
        awk -v suite="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uri = ""; has = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { split($i, w, /[ \t]+/); uri = w[2] }
                    if ($i ~ /^Suites:/) {
                        n = split($i, w, /[ \t]+/)
                        for (j = 2; j <= n; j++) if (w[j] == suite) has = 1
                    }
                }
                if (uri != "" && has) { print uri; exit }
            }' "$f"
    done | head -n 1
}
# One-line sources (older machines): "deb [options] URI SUITE COMPONENTS".
apt_mirror_legacy() {
    [ -e /etc/apt/sources.list ] || return 0
    awk -v suite="$suite" '$1 == "deb" {
            i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit }
        }' /etc/apt/sources.list
}

day="$(date -u +%Y%m%d)"
cache_dir="$cache_root/$day"
rootfs_tar="$cache_dir/debian-$suite-rootfs.tar"
mkdir -p "$cache_dir"
# Older days' tarballs are superseded by today's: keep the cache to one rootfs.
find "$cache_root" -mindepth 1 -maxdepth 1 -type d -name '20[0-9]*' ! -name "$day" \
    -exec rm -rf {} +

if ! [ -s "$rootfs_tar" ]; then
    mirror="$(apt_mirror)"
    [ -n "$mirror" ] || mirror="$(apt_mirror_legacy)"
    [ -n "$mirror" ] || die "no $suite mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
    log "debootstrap $suite from $mirror"
    rootfs="$work/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    # The rootfs keeps only the main suite; the image's apt-get update needs nothing more.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$rootfs_tar.tmp" .
    mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$rootfs"
fi

# Re-import only when the tarball changed: the image carries the tarball's checksum as a label.
tar_sum="$(sha256sum "$rootfs_tar" | cut -d' ' -f1)"
have_sum="$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "mse.rootfs.sha256"}}' \
    "$base_image" 2>/dev/null || true)"
if [ "$have_sum" != "$tar_sum" ]; then
    log "importing $rootfs_tar as $base_image"
    podman import -q --change "LABEL mse.rootfs.sha256=$tar_sum" --change 'CMD ["/bin/bash"]' \
        "$rootfs_tar" "$base_image" >/dev/null
fi

# --- checks ----------------------------------------------------------------------------------
passed=0
failed=0
skipped=0
results=()
pass() { passed=$((passed + 1)); results+=("PASS: $1"); echo "PASS: $1"; }
skip() { skipped=$((skipped + 1)); results+=("SKIP: $1"); echo "SKIP: $1"; }
fail() {
    failed=$((failed + 1)); results+=("FAIL: $1"); echo "FAIL: $1"
    [ -z "${2:-}" ] || sed 's/^/    | /' "$2" | tail -n 30
}
# check NAME CMD...: PASS when CMD exits 0; its output is shown on failure.
check() {
    local name="$1"; shift
    if "$@" >"$work/out" 2>&1; then pass "$name"; else fail "$name" "$work/out"; fi
}

# new_container IMAGE [buildah from options]: sets $ctr (a global, so the EXIT trap sees it too).
new_container() {
    ctr="$(buildah from --pull=never "${@:2}" "$1")"
    containers+=("$ctr")
}
# in_ctr [buildah run options] CTR -- CMD...
in_ctr() {
    buildah run --isolation chroot --network host "$@"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server LOGFILE [buildah run options] CTR -- CMD...: runs in its own process group,
# whose id goes to $pg (a global, so the EXIT trap sees it too). setsid does not fork here (a
# background job of a script is no group leader), so $! is the new group's id.
start_server() {
    local logfile="$1"; shift
    setsid buildah run --isolation chroot --network host "$@" >"$logfile" 2>&1 </dev/null &
    pg=$!
    server_pgids+=("$pg")
}
stop_server() {
    local left=1
    kill -TERM -- "-$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 -- "-$1" 2>/dev/null || { left=0; break; }; sleep 0.1; done
    [ "$left" = 0 ] || kill -KILL -- "-$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    # Forget the group once it is gone, so the EXIT trap never signals a reused id.
    local kept=() id
    for id in "${server_pgids[@]}"; do [ "$id" = "$1" ] || kept+=("$id"); done
    server_pgids=("${kept[@]}")
}
# wait_for PGID SECONDS CMD...: until CMD succeeds, the server's group dies, or time runs out.
wait_for() {
    local pgid="$1" limit="$2"; shift 2
    local deadline=$((SECONDS + limit))
    while [ "$SECONDS" -lt "$deadline" ]; do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 -- "-$pgid" 2>/dev/null || return 1
        sleep 0.5
    done
    return 1
}

# --- 3. lint and build -----------------------------------------------------------------------
check "lint: hadolint on the Dockerfiles (justified waivers only), shellcheck on the scripts" \
    bash "$repo/tests/image/lint.sh"

version="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$repo/pyproject.toml" 2>/dev/null || echo unknown)"
revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
# The commit's time, not the clock's: the same tree gives the same labels, so a second run
# reuses every cached layer (and the examples, built FROM the toolkit image, too).
build_date="$(TZ=UTC git -C "$repo" log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ \
    2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)"
source_url="$(git -C "$repo" config --get remote.origin.url 2>/dev/null || true)"

bud() {
    buildah bud --isolation chroot --network host --layers --pull=never --force-rm \
        -v "$ca_bundle:$ca_bundle:ro" "$@"
}

build_toolkit() {
    bud --build-arg "BASE_IMAGE=$base_image" --target toolkit \
        --build-arg "VERSION=$version" --build-arg "VCS_REF=$revision" \
        --build-arg "BUILD_DATE=$build_date" --build-arg "SOURCE_URL=$source_url" \
        "$@" -f "$repo/Dockerfile" -t "$toolkit_image" "$repo" >>"$work/build-toolkit.log" 2>&1
}

log "building $toolkit_image (--target toolkit)"
built=0
if build_toolkit; then
    built=1
    # buildah (1.28) can take the LABEL layer from its cache although a build argument it uses
    # changed, e.g. after a commit outside the build context; Docker would rebuild it. Rebuild
    # without the cache then, so the labels checked below are the ones this commit asks for.
    labelled="$(buildah inspect --type image \
        --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.revision"}}' \
        "$toolkit_image" 2>/dev/null || true)"
    if [ "$labelled" != "$revision" ]; then
        log "buildah reused a label layer of another revision; rebuilding without its cache"
        build_toolkit --no-cache || built=0
    fi
fi
if [ "$built" = 1 ]; then
    pass "build: toolkit target on $base_image"
else
    fail "build: toolkit target on $base_image" "$work/build-toolkit.log"
    echo "$passed passed, $failed failed"
    exit 1
fi

log "building $flask_image (examples/flask on $toolkit_image)"
if bud --build-arg "MSE_BASE_IMAGE=$toolkit_image" -f "$repo/examples/flask/Dockerfile" \
        -t "$flask_image" "$repo/examples/flask" >"$work/build-flask.log" 2>&1; then
    pass "build: examples/flask FROM $toolkit_image"
else
    fail "build: examples/flask FROM $toolkit_image" "$work/build-flask.log"
    echo "$passed passed, $failed failed"
    exit 1
fi

log "building $fastapi_image (examples/fastapi on $toolkit_image)"
fastapi_built=0
if bud --build-arg "MSE_BASE_IMAGE=$toolkit_image" -f "$repo/examples/fastapi/Dockerfile" \
        -t "$fastapi_image" "$repo/examples/fastapi" >"$work/build-fastapi.log" 2>&1; then
    pass "build: examples/fastapi FROM $toolkit_image"
    fastapi_built=1
else
    fail "build: examples/fastapi FROM $toolkit_image" "$work/build-fastapi.log"
fi

# The sgx-keys stage, for real but against a local server: Gramine's and Intel's servers are out
# of reach, so the stage fetches keys made here, and must accept a keyring holding only the
# expected key and refuse one holding another.
log "sgx-keys stage: fingerprint check with local keys"
export GNUPGHOME="$work/gnupg"
mkdir -m 0700 "$GNUPGHOME"
mkdir -p "$work/repo/good" "$work/repo/bad"
for name in expected other; do
    gpg --batch --quiet --passphrase '' --quick-gen-key "mse-base image test ($name)" ed25519 sign never
done
fpr_of() { gpg --batch --with-colons --list-keys "mse-base image test ($1)" | awk -F: '$1 == "fpr" { print $10; exit }'; }
fpr_expected="$(fpr_of expected)"
gpg --batch --export "$fpr_expected" >"$work/repo/good/gramine-keyring-$suite.gpg"
gpg --batch --armor --export "$fpr_expected" >"$work/repo/good/intel-sgx-deb.key"
# A keyring with the expected key plus another: the extra key alone must make it fail.
gpg --batch --export "$fpr_expected" "$(fpr_of other)" >"$work/repo/bad/gramine-keyring-$suite.gpg"
cp "$work/repo/good/intel-sgx-deb.key" "$work/repo/bad/"
repo_port="$(free_port)"
setsid python3 -m http.server --bind 127.0.0.1 --directory "$work/repo" "$repo_port" \
    >"$work/http.log" 2>&1 </dev/null &
repo_pg=$!
server_pgids+=("$repo_pg")
wait_for "$repo_pg" 30 curl -sf "http://127.0.0.1:$repo_port/good/intel-sgx-deb.key" || true
sgx_keys() {
    bud --build-arg "BASE_IMAGE=$base_image" --target sgx-keys \
        --build-arg "GRAMINE_REPO_URL=http://127.0.0.1:$repo_port/$1" \
        --build-arg "INTEL_SGX_REPO_URL=http://127.0.0.1:$repo_port/$1" \
        --build-arg "GRAMINE_KEY_FINGERPRINTS=$fpr_expected" \
        --build-arg "INTEL_SGX_KEY_FINGERPRINTS=$fpr_expected" \
        --build-arg INTEL_SGX_SUITE=jammy \
        -f "$repo/Dockerfile" -t "localhost/mse-sgx-keys:$1" "$repo"
}
if sgx_keys good >"$work/sgx-keys-good.log" 2>&1; then
    new_container "localhost/mse-sgx-keys:good"
    check "sgx-keys: keyrings holding only the expected key are accepted, apt sources written" \
        in_ctr "$ctr" -- sh -ec '
            cat /keys/gramine.list /keys/intel-sgx.list
            grep -qx "deb \[arch=amd64 signed-by=/etc/apt/keyrings/gramine.gpg\] $1/good/ bookworm main" /keys/gramine.list
            grep -qx "deb \[arch=amd64 signed-by=/etc/apt/keyrings/intel-sgx.asc\] $1/good jammy main" /keys/intel-sgx.list
            test -s /keys/gramine.gpg && test -s /keys/intel-sgx.asc' _ "http://127.0.0.1:$repo_port"
else
    fail "sgx-keys: keyrings holding only the expected key are accepted, apt sources written" \
        "$work/sgx-keys-good.log"
fi
if sgx_keys bad >"$work/sgx-keys-bad.log" 2>&1; then
    fail "sgx-keys: a keyring holding an unexpected key fails the build (it built)" "$work/sgx-keys-bad.log"
elif grep -q "unexpected key $(fpr_of other)" "$work/sgx-keys-bad.log"; then
    pass "sgx-keys: a keyring holding an unexpected key fails the build"
else
    fail "sgx-keys: a keyring holding an unexpected key fails the build, naming the key" \
        "$work/sgx-keys-bad.log"
fi
stop_server "$repo_pg"

# --- 4. the image's contents -----------------------------------------------------------------
log "checking image contents"
new_container "$toolkit_image"; tk="$ctr"
new_container "$flask_image"; fl="$ctr"

check "labels: OCI source/version/revision/created set from build args" \
    bash -c 'buildah inspect --type image "$1" | python3 -c "
import json, sys
labels = json.load(sys.stdin)[\"OCIv1\"][\"config\"].get(\"Labels\") or {}
print(labels)
want = {\"revision\": sys.argv[1], \"version\": sys.argv[2], \"created\": sys.argv[3]}
for key in (\"source\", \"version\", \"revision\", \"created\"):
    assert \"org.opencontainers.image.\" + key in labels, key
for key, value in want.items():
    assert labels[\"org.opencontainers.image.\" + key] == value, (key, value)
" "$2" "$3" "$4"' _ "$toolkit_image" "$revision" "$version" "$build_date"

# One sh -c per image, so the checks see the image's PATH exactly as a derived RUN does.
check "toolkit: mse-run, mse-test, mse-verify on PATH from /opt/mse/venv/bin" \
    in_ctr "$tk" -- sh -ec '
        for c in mse-run mse-test mse-verify python3 pip3 pip; do
            p="$(command -v "$c")"; echo "$c -> $p"
            case "$p" in /opt/mse/venv/bin/*) ;; *) exit 1 ;; esac
        done'

check "toolkit: no compiler, no apt lists, no pip cache, no __pycache__ in the venv" \
    in_ctr "$tk" -- sh -ec '
        for c in gcc cc c++ make; do
            if command -v "$c"; then echo "compiler present: $c"; exit 1; fi
        done
        if [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -x -e lock -e partial)" ]; then
            ls /var/lib/apt/lists; exit 1
        fi
        if [ -e /root/.cache/pip ]; then echo "pip cache present"; exit 1; fi
        if [ -n "$(find /opt/mse/venv -name __pycache__ -print -quit)" ]; then
            find /opt/mse/venv -name __pycache__ | head; exit 1
        fi
        test ! -e /src'

check "toolkit: /root/.config/gramine (0700) and /mse-app exist, WORKDIR /root" \
    in_ctr "$tk" -- sh -ec '
        test "$(stat -c %a /root/.config/gramine)" = 700
        test -d /mse-app
        test "$(pwd)" = /root'

check "toolkit: the venv uses the distribution's python3, the only Python in the image" \
    in_ctr "$tk" -- sh -ec '
        test "$(readlink -f /opt/mse/venv/bin/python3)" = "$(readlink -f /usr/bin/python3)"
        test ! -e /usr/local/bin/python3
        python3 -c "import sys; assert sys.prefix == \"/opt/mse/venv\", sys.prefix"'

# (d) the derived image's `RUN pip3 install flask==2.2.2` went into the venv.
check "derived image: pip3 install flask==2.2.2 landed in /opt/mse/venv, and it imports" \
    in_ctr "$fl" -- sh -ec '
        f="$(python3 -c "import flask; print(flask.__file__)")"; echo "$f"
        case "$f" in /opt/mse/venv/lib/python3*/site-packages/flask/__init__.py) ;; *) exit 1 ;; esac
        python3 -c "import importlib.metadata as m; assert m.version(\"flask\") == \"2.2.2\""
        test -z "$(find /opt/mse/venv -name __pycache__ -print -quit)"
        test ! -e /root/.cache/pip'

check "derived image: a later pip3 install in a container also lands in the venv" \
    in_ctr -v "$ca_bundle:$ca_bundle:ro" "$fl" -- sh -ec '
        pip3 install --quiet six==1.16.0
        f="$(python3 -c "import six; print(six.__file__)")"; echo "$f"
        case "$f" in /opt/mse/venv/lib/python3*/site-packages/six.py) ;; *) exit 1 ;; esac'

check "mse-run --version names the toolkit and Python" \
    bash -c 'out="$(buildah run --isolation chroot --network host "$1" -- mse-run --version 2>&1)"; echo "$out"
             grep -qi python <<<"$out"' _ "$tk"

# --- 5. the example, served ------------------------------------------------------------------
app_dir="$repo/examples/flask"
io="$work/io"
mkdir -p "$io"
tar -C "$app_dir" -cf "$io/app.tar" app.py requirements.txt
expiry=$(( $(date +%s) + 7 * 86400 ))
uuid="$(python3 -c 'import uuid; print(uuid.uuid4())')"

# (a) mse-test with the example mounted at /mse-app answers on 127.0.0.1:5000.
log "mse-test on 127.0.0.1:5000"
if curl -s -o /dev/null --max-time 2 http://127.0.0.1:5000/; then
    fail "mse-test: port 5000 is already taken on this machine" /dev/null
else
    start_server "$work/mse-test.log" -v "$app_dir:/mse-app:ro" "$fl" -- \
        mse-test --application app:app
    if wait_for "$pg" 60 curl -sf --max-time 2 http://127.0.0.1:5000/ \
            && [ "$(curl -sf --max-time 5 http://127.0.0.1:5000/)" = "Hello world" ]; then
        pass "mse-test --application app:app serves the example on 127.0.0.1:5000"
    else
        fail "mse-test --application app:app serves the example on 127.0.0.1:5000" "$work/mse-test.log"
    fi
    stop_server "$pg"
fi

# The ASGI example under mse-test, on a port given with --port.
if [ "$fastapi_built" = 1 ]; then
    new_container "$fastapi_image"; fa="$ctr"
    port="$(free_port)"
    start_server "$work/mse-test-fastapi.log" -v "$repo/examples/fastapi:/mse-app:ro" "$fa" -- \
        mse-test --application app:app --port "$port"
    if wait_for "$pg" 60 curl -sf --max-time 2 "http://127.0.0.1:$port/" \
            && [ "$(curl -sf --max-time 5 "http://127.0.0.1:$port/")" = '{"message":"Hello world"}' ]; then
        pass "mse-test serves the FastAPI (ASGI) example on 127.0.0.1:$port"
    else
        fail "mse-test serves the FastAPI (ASGI) example on 127.0.0.1:$port" "$work/mse-test-fastapi.log"
    fi
    stop_server "$pg"
fi

# (b) mse-run --simulation serves HTTPS with an RA-TLS certificate that verifies.
port="$(free_port)"
log "mse-run --simulation on localhost:$port"
start_server "$work/mse-run-sim.log" -v "$io:/io:ro" "$fl" -- \
    mse-run --simulation --size 512M --code /io/app.tar --host localhost \
        --application app:app --uuid "$uuid" --self-signed "$expiry" --port "$port"
get_cert() {
    openssl s_client -connect "127.0.0.1:$port" -servername localhost </dev/null 2>/dev/null \
        | openssl x509 -outform PEM >"$work/cert.pem"
}
if wait_for "$pg" 120 get_cert; then
    pass "mse-run --simulation: HTTPS up on localhost:$port, certificate fetched"
    check "mse-run --simulation: printed MRENCLAVE (64 hex)" \
        grep -Eq 'MRENCLAVE: *[0-9a-f]{64}' "$work/mse-run-sim.log"
    check "mse-run --simulation: certificate is for localhost and expires at --self-signed" \
        bash -c 'openssl x509 -in "$1" -noout -ext subjectAltName | grep -q "DNS:localhost" &&
                 test "$(date -u -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%s)" = "$2"' \
        _ "$work/cert.pem" "$expiry"
    check "mse-run --simulation: curl --cacert cert.pem https://localhost:$port/ gives the app's answer" \
        bash -c 'body="$(curl -sS --fail --max-time 10 --cacert "$1" "https://localhost:$2/")"; echo "$body"
                 test "$body" = "Hello world"' _ "$work/cert.pem" "$port"
    check "mse-verify https://localhost:$port --simulation-ca (in the container) exits 0" \
        in_ctr "$fl" -- sh -ec '
            ca="${XDG_CONFIG_HOME:-$HOME/.config}/mse/simulation/ca.pem"
            test -s "$ca"
            mse-verify "https://localhost:$1" --simulation-ca "$ca"' _ "$port"
else
    fail "mse-run --simulation: HTTPS up on localhost:$port, certificate fetched" "$work/mse-run-sim.log"
fi
stop_server "$pg"

# --simulation --dry-run in two fresh containers of the image: the same image, tar and
# parameters must give the same measurement.
# dry_run LOG CTR (CTR made beforehand: a container made inside $(...) would escape the trap).
dry_run() {
    buildah run --isolation chroot --network host -v "$io:/io:ro" "$2" -- \
        mse-run --simulation --dry-run --size 512M --code /io/app.tar --host localhost \
        --application app:app --uuid "$uuid" --self-signed "$expiry" --port 8443 \
        >"$1" 2>&1 || return 1
    grep -Eo 'MRENCLAVE: *[0-9a-f]{64}' "$1"
}
new_container "$flask_image"; d1="$ctr"
new_container "$flask_image"; d2="$ctr"
if first="$(dry_run "$work/dry-run-1.log" "$d1")" && second="$(dry_run "$work/dry-run-2.log" "$d2")" \
        && [ -n "$first" ] && [ "$first" = "$second" ]; then
    pass "mse-run --simulation --dry-run: same MRENCLAVE in two containers ($first)"
else
    cat "$work/dry-run-1.log" "$work/dry-run-2.log" >"$work/dry-run.log" 2>/dev/null || true
    fail "mse-run --simulation --dry-run: same MRENCLAVE in two containers" "$work/dry-run.log"
fi

# (c) without --simulation and without Gramine: a clear failure, never a silent fallback.
log "mse-run without Gramine"
if timeout 120 buildah run --isolation chroot --network host -v "$io:/io:ro" "$fl" -- \
        mse-run --size 512M --code /io/app.tar --host localhost --application app:app \
        --uuid "$uuid" --self-signed "$expiry" --port "$(free_port)" >"$work/mse-run-sgx.log" 2>&1; then
    fail "mse-run without --simulation and without Gramine fails (it exited 0)" "$work/mse-run-sgx.log"
elif grep -qi gramine "$work/mse-run-sgx.log" && ! grep -q Traceback "$work/mse-run-sgx.log"; then
    pass "mse-run without --simulation and without Gramine fails, naming Gramine, no traceback"
else
    fail "mse-run without --simulation and without Gramine fails, naming Gramine, no traceback" \
        "$work/mse-run-sgx.log"
fi

# --- 6. the Gramine stage (mse-base), from the package in ../shared/gramine/ -----------------
# Gramine's and Intel's repositories are out of reach here, so the Dockerfile's repository
# overrides point at an apt repository served on loopback: the Gramine package beside the clone
# and an empty Intel suite (INTEL_SGX_PACKAGES is empty: nothing is wanted from it, but the
# image's Intel apt source must still answer `apt-get update`), both signed with the key made
# for this run above, whose fingerprint the sgx-keys stage checks as it checks the real ones.
gramine_image="localhost/mse-base:gramine-test"
gramine_rebuild="localhost/mse-base:gramine-rebuild"
gramine_flask="localhost/mse-flask:gramine-test"
gramine_flask_rebuild="localhost/mse-flask:gramine-rebuild"
direct_port="$(free_port)"

# gramine_dry_run LOG CTR: a real (SGX, not simulated) dry run of the Flask example; prints
# MRENCLAVE after checking that it is what Gramine's own sigstruct-view reads from mse.sig.
# The parameters are the --direct run's below: all measured but --port (the same anyway).
gramine_dry_run() {
    buildah run --isolation chroot --network host -v "$io:/io:ro" "$2" -- sh -ec '
        rm -rf /tmp/dry-run
        mse-run --dry-run --workdir /tmp/dry-run --size 512M --code /io/app.tar \
            --host localhost --application app:app --uuid "$1" --self-signed "$2" --port "$3"
        echo "--- gramine-sgx-sigstruct-view"
        gramine-sgx-sigstruct-view --output-format json /tmp/dry-run/mse.sig' \
        _ "$uuid" "$expiry" "$direct_port" >"$1" 2>&1 || return 1
    python3 - "$1" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
printed = re.findall(r"^MRENCLAVE: ([0-9a-f]{64})(.*)$", text, re.M)
assert len(printed) == 1, "no single MRENCLAVE line"
mrenclave, tag = printed[0]
assert tag.strip() == "", f"the MRENCLAVE line is tagged {tag.strip()!r}: not a real measurement"
view = json.loads(text.split("--- gramine-sgx-sigstruct-view\n", 1)[1])
assert view["mr_enclave"] == mrenclave, (view["mr_enclave"], mrenclave)
print(mrenclave)
PY
}

gramine_deb=""
if ! gramine_deb="$(gramine_package "$repo")"; then
    fail "Gramine stage: the package in ../shared/gramine/ does not match its SHA256SUMS" /dev/null
    gramine_deb=""
elif [ -z "$gramine_deb" ]; then
    if [ "${CI:-}" = true ]; then
        fail "Gramine stage: CI=true and no gramine_*.deb in ../shared/gramine/ beside the clone" /dev/null
    else
        skip "Gramine stage (mse-base target) and every check in it: no gramine_*.deb in ../shared/gramine/ beside the clone"
    fi
fi

if [ -n "$gramine_deb" ]; then
    gramine_version="$(dpkg-deb -f "$gramine_deb" Version)"
    log "Gramine stage: local apt repository for $(basename "$gramine_deb") ($gramine_version)"
    apt_root="$work/apt"
    mkdir -p "$apt_root/gramine/pool/main" "$apt_root/intel"
    cp "$gramine_deb" "$apt_root/gramine/pool/main/"
    gpg --batch --export "$fpr_expected" >"$apt_root/gramine/gramine-keyring-$suite.gpg"
    gpg --batch --armor --export "$fpr_expected" >"$apt_root/intel/intel-sgx-deb.key"
    # apt_suite DIR SUITE: Packages from DIR/pool (if any), a Release over them, signed inline
    # (InRelease) and detached (Release.gpg), as apt expects of a signed-by repository.
    apt_suite() {
        local dir="$1" dist="$1/dists/$2"
        mkdir -p "$dist/main/binary-amd64"
        if [ -d "$dir/pool" ]; then
            (cd "$dir" && apt-ftparchive packages pool) >"$dist/main/binary-amd64/Packages"
        else
            : >"$dist/main/binary-amd64/Packages"
        fi
        gzip -9nk "$dist/main/binary-amd64/Packages"
        apt-ftparchive -o "APT::FTPArchive::Release::Suite=$2" \
            -o "APT::FTPArchive::Release::Codename=$2" \
            -o APT::FTPArchive::Release::Architectures=amd64 \
            -o APT::FTPArchive::Release::Components=main \
            release "$dist" >"$work/Release"
        mv "$work/Release" "$dist/Release"
        gpg --batch --yes --local-user "$fpr_expected" --clearsign -o "$dist/InRelease" "$dist/Release"
        gpg --batch --yes --local-user "$fpr_expected" --detach-sign --armor \
            -o "$dist/Release.gpg" "$dist/Release"
    }
    apt_suite "$apt_root/gramine" "$suite"
    apt_suite "$apt_root/intel" jammy
    apt_port="$(free_port)"
    setsid python3 -m http.server --bind 127.0.0.1 --directory "$apt_root" "$apt_port" \
        >"$work/apt-http.log" 2>&1 </dev/null &
    apt_pg=$!
    server_pgids+=("$apt_pg")
    wait_for "$apt_pg" 30 curl -sf "http://127.0.0.1:$apt_port/gramine/dists/$suite/InRelease" || true

    # build_gramine TAG [bud options]: the mse-base target from that repository.
    build_gramine() {
        local tag="$1"; shift
        bud --build-arg "BASE_IMAGE=$base_image" --target mse-base \
            --build-arg "GRAMINE_REPO_URL=http://127.0.0.1:$apt_port/gramine" \
            --build-arg "INTEL_SGX_REPO_URL=http://127.0.0.1:$apt_port/intel" \
            --build-arg "GRAMINE_KEY_FINGERPRINTS=$fpr_expected" \
            --build-arg "INTEL_SGX_KEY_FINGERPRINTS=$fpr_expected" \
            --build-arg "GRAMINE_VERSION=$gramine_version" \
            --build-arg INTEL_SGX_SUITE=jammy --build-arg INTEL_SGX_PACKAGES= \
            --build-arg "VERSION=$version" --build-arg "VCS_REF=$revision" \
            --build-arg "BUILD_DATE=$build_date" --build-arg "SOURCE_URL=$source_url" \
            "$@" -f "$repo/Dockerfile" -t "$tag" "$repo"
    }
    # build_flask_on BASE TAG [bud options]
    build_flask_on() {
        bud --build-arg "MSE_BASE_IMAGE=$1" -f "$repo/examples/flask/Dockerfile" -t "$2" "${@:3}" \
            "$repo/examples/flask"
    }

    # Both builds of this stage are made without the layer cache, and keep no intermediate
    # layers: the key and the port are new in every run, so the Gramine layers could never be
    # reused, and cached copies would only pile up from run to run. The previous run's images
    # are removed first. (The base and the toolkit target keep their cache.)
    log "building $gramine_image (--target mse-base, Gramine $gramine_version from 127.0.0.1:$apt_port)"
    buildah rmi "$gramine_flask" "$gramine_image" >/dev/null 2>&1 || true
    t0=$SECONDS
    if build_gramine "$gramine_image" --no-cache --layers=false >"$work/build-gramine.log" 2>&1 \
            && build_flask_on "$gramine_image" "$gramine_flask" --no-cache --layers=false \
                >>"$work/build-gramine.log" 2>&1; then
        gramine_built=1
        pass "build: mse-base target (Gramine $gramine_version from a signed local apt repository, no Intel packages) and examples/flask on it, no layer cache, $((SECONDS - t0)) s"
    else
        gramine_built=0
        fail "build: mse-base target from a signed local apt repository, and examples/flask on it, no layer cache" \
            "$work/build-gramine.log"
    fi

    if [ "$gramine_built" = 1 ]; then
        new_container "$gramine_flask"; gf="$ctr"
        check "mse-base: gramine $gramine_version installed from the local repository, Intel source configured, no Intel packages, no curl or gpg" \
            in_ctr "$gf" -- sh -ec '
                test "$(dpkg-query -W -f "\${Version}" gramine)" = "$1"
                gramine-direct --version
                for c in gramine-sgx gramine-sgx-sign gramine-sgx-sigstruct-view gramine-manifest; do
                    command -v "$c"
                done
                grep -q "127.0.0.1:$2/intel" /etc/apt/sources.list.d/intel-sgx.list
                if dpkg-query -W -f "\${Package}\n" | grep -E "^(libsgx|sgx-)"; then exit 1; fi
                for c in curl gpg gcc; do if command -v "$c"; then exit 1; fi; done
                test "$(command -v mse-run)" = /opt/mse/venv/bin/mse-run
                test -z "$(find /opt/mse/venv -name __pycache__ -print -quit)"' \
            _ "$gramine_version" "$apt_port"

        log "mse-run --dry-run (SGX measurement, Gramine's signer) in $gramine_flask"
        if mr_first="$(gramine_dry_run "$work/gramine-dry-run-1.log" "$gf")"; then
            pass "mse-run --dry-run in the mse-base image: real MRENCLAVE $mr_first, equal to gramine-sgx-sigstruct-view's on mse.sig"
        else
            mr_first=""
            fail "mse-run --dry-run in the mse-base image: real MRENCLAVE, equal to gramine-sgx-sigstruct-view's" \
                "$work/gramine-dry-run-1.log"
        fi

        # gramine-direct inside `buildah run --isolation chroot`: the default seccomp profile of
        # containers (and Docker's) allows personality() only for a few values, and Gramine's
        # direct PAL sets ADDR_NO_RANDOMIZE first ("PAL failed setting personality failed:
        # Function not implemented (ENOSYS)"). A profile that is the machine's default plus that
        # one call is enough; docs/image.md has the details.
        seccomp_profile="$work/seccomp-gramine-direct.json"
        seccomp_opt="seccomp=$seccomp_profile"
        default_profile=/usr/share/containers/seccomp.json
        if ! [ -f "$default_profile" ] || ! python3 - "$default_profile" "$seccomp_profile" <<'PY'
import json, sys
profile = json.load(open(sys.argv[1]))
ADDR_NO_RANDOMIZE = 0x0040000
profile["syscalls"].append({
    "names": ["personality"],
    "action": "SCMP_ACT_ALLOW",
    "args": [{"index": 0, "value": ADDR_NO_RANDOMIZE, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
})
json.dump(profile, open(sys.argv[2], "w"))
PY
        then
            log "no $default_profile to extend: gramine-direct runs unconfined"
            seccomp_opt="seccomp=unconfined"
        fi
        new_container "$gramine_flask" --security-opt "$seccomp_opt"; gd="$ctr"
        cat >"$io/hello.manifest.template" <<'TOML'
libos.entrypoint = "/usr/bin/python3"
loader.entrypoint.uri = "file:{{ gramine.libos }}"
loader.env.LD_LIBRARY_PATH = "/lib:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu"
loader.argv = ["python3", "-B", "-c", "import ssl, threading; print('hello from gramine-direct', ssl.OPENSSL_VERSION)"]
fs.mounts = [
  { path = "/lib", uri = "file:{{ gramine.runtimedir() }}" },
  { path = "/lib/x86_64-linux-gnu", uri = "file:/lib/x86_64-linux-gnu" },
  { path = "/usr", uri = "file:/usr" },
]
sgx.trusted_files = [
  "file:{{ gramine.libos }}",
  "file:{{ gramine.runtimedir() }}/",
  "file:/usr/bin/python3",
  "file:{{ python.stdlib }}/",
  "file:/lib/x86_64-linux-gnu/",
  "file:/usr/lib/x86_64-linux-gnu/",
]
TOML
        # hello_direct CTR: the tiny manifest, run by gramine-direct in the container.
        hello_direct() {
            buildah run --isolation chroot --network host -v "$io:/io:ro" "$1" -- sh -ec '
                mkdir -p /tmp/hello && cd /tmp/hello
                gramine-manifest /io/hello.manifest.template hello.manifest
                gramine-direct hello'
        }
        hello_direct_prints() {
            local out
            out="$(hello_direct "$1" 2>&1)" || { echo "$out"; return 1; }
            echo "$out"
            grep -q 'hello from gramine-direct' <<<"$out"
        }
        check "gramine-direct runs Python (ssl, threads) in the LibOS inside buildah run --isolation chroot ($seccomp_opt)" \
            hello_direct_prints "$gd"
        # What the default profile does, for the record (not a check: it is the container
        # engine's policy, not ours).
        if hello_direct "$gf" >"$work/direct-default-seccomp.log" 2>&1; then
            log "note: gramine-direct also ran under the default seccomp profile"
        else
            log "note: under the default seccomp profile gramine-direct stops: $(grep -m1 -i error "$work/direct-default-seccomp.log" || tail -n 1 "$work/direct-default-seccomp.log")"
        fi

        # mse-run --direct (issue 9, item 2). The container ($gd) carries the seccomp profile:
        # `buildah run` takes no --security-opt.
        log "mse-run --direct on localhost:$direct_port"
        start_server "$work/mse-run-direct.log" -v "$io:/io:ro" "$gd" -- \
            mse-run --direct --size 512M --code /io/app.tar --host localhost \
                --application app:app --uuid "$uuid" --self-signed "$expiry" --port "$direct_port"
        get_direct_cert() {
            openssl s_client -connect "127.0.0.1:$direct_port" -servername localhost </dev/null 2>/dev/null \
                | openssl x509 -outform PEM >"$work/direct-cert.pem"
        }
        if wait_for "$pg" 180 get_direct_cert; then
            pass "mse-run --direct: HTTPS up on localhost:$direct_port from gramine-direct in the container"
            check "mse-run --direct: says it runs the Gramine LibOS without SGX" \
                grep -q 'DIRECT: Gramine LibOS without SGX' "$work/mse-run-direct.log"
            check "mse-run --direct: curl --cacert cert.pem https://localhost:$direct_port/ gives the app's answer" \
                bash -c 'body="$(curl -sS --fail --max-time 10 --cacert "$1" "https://localhost:$2/")"; echo "$body"
                         test "$body" = "Hello world"' _ "$work/direct-cert.pem" "$direct_port"
            if [ -n "$mr_first" ]; then
                check "mse-verify --simulation-ca --mrenclave <the dry run's> accepts the --direct enclave" \
                    in_ctr "$gd" -- sh -ec '
                        ca="${XDG_CONFIG_HOME:-$HOME/.config}/mse/simulation/ca.pem"
                        mse-verify "https://localhost:$1" --simulation-ca "$ca" --mrenclave "$2"' \
                    _ "$direct_port" "$mr_first"
                # The pin must be able to fail: another MRENCLAVE is refused, by the pin (exit 1
                # and the policy's line), not by any other failure.
                other_mr="$(printf '%s' "$mr_first" | tr '0-9a-f' '1-9a-f0')"
                verify_rc=0
                in_ctr "$gd" -- sh -ec '
                        ca="${XDG_CONFIG_HOME:-$HOME/.config}/mse/simulation/ca.pem"
                        mse-verify "https://localhost:$1" --simulation-ca "$ca" --mrenclave "$2"' \
                        _ "$direct_port" "$other_mr" >"$work/verify-other.log" 2>&1 || verify_rc=$?
                if [ "$verify_rc" -eq 1 ] \
                        && grep -qF "MRENCLAVE $mr_first is not the expected $other_mr" "$work/verify-other.log"; then
                    pass "mse-verify --mrenclave <another value> refuses the --direct enclave (exit 1, names both MRENCLAVEs)"
                else
                    fail "mse-verify --mrenclave <another value> refuses the --direct enclave with exit 1 and the MRENCLAVE mismatch (exit $verify_rc)" \
                        "$work/verify-other.log"
                fi
            fi
        else
            fail "mse-run --direct: HTTPS up on localhost:$direct_port from gramine-direct in the container" \
                "$work/mse-run-direct.log"
        fi
        stop_server "$pg"

        # The same inputs built again, as independently: the measurement must not depend on
        # when the image was built (timestamps, byte-code, file order).
        buildah rmi "$gramine_flask_rebuild" "$gramine_rebuild" >/dev/null 2>&1 || true
        log "rebuilding $gramine_rebuild and $gramine_flask_rebuild without the layer cache"
        t0=$SECONDS
        if build_gramine "$gramine_rebuild" --no-cache --layers=false >"$work/build-rebuild.log" 2>&1 \
                && build_flask_on "$gramine_rebuild" "$gramine_flask_rebuild" --no-cache --layers=false \
                    >>"$work/build-rebuild.log" 2>&1; then
            pass "build: mse-base and examples/flask again from the same inputs, $((SECONDS - t0)) s"
            new_container "$gramine_flask_rebuild"; gr="$ctr"
            if ! mr_second="$(gramine_dry_run "$work/gramine-dry-run-2.log" "$gr")"; then
                fail "reproducible: mse-run --dry-run in the rebuilt image" "$work/gramine-dry-run-2.log"
            elif [ -n "$mr_first" ] && [ "$mr_second" = "$mr_first" ]; then
                pass "reproducible: two builds of the image give the same MRENCLAVE ($mr_second)"
            else
                # Which trusted files differ: the two manifests, side by side.
                diff <(in_ctr "$gf" -- cat /tmp/dry-run/mse.manifest) \
                     <(in_ctr "$gr" -- cat /tmp/dry-run/mse.manifest) >"$work/manifest.diff" 2>&1 || true
                fail "reproducible: two builds of the image give the same MRENCLAVE (${mr_first:-none} and $mr_second)" \
                    "$work/manifest.diff"
            fi
        else
            fail "build: mse-base and examples/flask again from the same inputs" \
                "$work/build-rebuild.log"
        fi
    fi
    stop_server "$apt_pg"
fi

# --- summary ---------------------------------------------------------------------------------
echo
printf '%s\n' "${results[@]}"
log "done"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]

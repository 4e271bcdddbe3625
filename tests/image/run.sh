#!/usr/bin/env bash
# Build the image's testable target and the Flask example with buildah, then check them from
# inside containers. Needs root; idempotent; no Docker engine and no registry involved.
#
#   tests/image/run.sh
#
# 1. installs buildah, podman and debootstrap if missing;
# 2. makes a Debian base with debootstrap from this machine's apt mirror, once a day (the rootfs
#    tarball is cached under $MSE_IMAGE_CACHE, default /var/cache/mse-base-image/<date>/),
#    imported as localhost/debian-base:bookworm;
# 3. lints the Dockerfiles, builds `--target toolkit` as localhost/mse-base:test, both examples
#    on top of it (localhost/mse-flask:test, localhost/mse-fastapi:test), and `--target sgx-keys`
#    against a local server with keys made for the run;
# 4. runs the checks; prints PASS/FAIL per check and "N passed, N failed"; exits 1 if any failed.
#
# What it cannot cover: the sgx-runtime stage (Gramine's and Intel's repositories are not
# reachable here) and SGX itself; `mse-run --simulation` stands in for the enclave.
# tests/image/README.md says what each check proves.
#
# Servers run with `buildah run --isolation chroot --network host` (podman run cannot work on
# these machines: no CAP_SYS_RESOURCE); each runs in its own process group, which the EXIT trap
# ends.
# SC2016: the single-quoted scripts are run by another shell (bash -c, or sh -c in a container)
# and take their values as arguments; they must not expand here.
# shellcheck disable=SC2016
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
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
for tool in buildah podman debootstrap curl openssl gpg shellcheck; do
    command -v "$tool" >/dev/null || need+=("${tool/#gpg/gnupg}")
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
results=()
pass() { passed=$((passed + 1)); results+=("PASS: $1"); echo "PASS: $1"; }
fail() {
    failed=$((failed + 1)); results+=("FAIL: $1"); echo "FAIL: $1"
    [ -z "${2:-}" ] || sed 's/^/    | /' "$2" | tail -n 30
}
# check NAME CMD...: PASS when CMD exits 0; its output is shown on failure.
check() {
    local name="$1"; shift
    if "$@" >"$work/out" 2>&1; then pass "$name"; else fail "$name" "$work/out"; fi
}

# new_container IMAGE: sets $ctr (a global, so the EXIT trap sees it too).
new_container() {
    ctr="$(buildah from --pull=never "$1")"
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

# --- summary ---------------------------------------------------------------------------------
echo
printf '%s\n' "${results[@]}"
log "done"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

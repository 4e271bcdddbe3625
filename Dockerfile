# mse-base: run a Python web app in an Intel SGX enclave with Gramine.
#
#   docker build --build-arg BUILD_DATE="$(date -u +%Y%m%d)" -t "mse-base:$(date -u +%Y%m%d)" .
#
# Stages (the last one, `mse-base`, is the default target):
#
#   python-runtime  any Debian or Ubuntu base (BASE_IMAGE): Python, venv support, CA bundle
#   toolkit-build   our package built and installed into /opt/mse/venv
#   runtime         the image's layout and environment, shared by both targets below
#   toolkit         runtime + the venv: everything but Gramine and Intel's libraries.
#                   Builds anywhere the base distribution's apt mirror and PyPI are reachable;
#                   CI builds and tests this target (tests/image/run.sh).
#   sgx-keys        fetches the Gramine and Intel apt signing keys and checks their fingerprints
#   sgx-runtime     runtime + Gramine + Intel SGX packages, versions pinned by build args.
#                   Needs packages.gramineproject.io and download.01.org: the one stage that
#                   cannot be built without access to those repositories.
#   mse-base        sgx-runtime + the venv: the product.
#
# The venv is copied last into both targets, so a change to the toolkit rebuilds one layer and
# leaves the Gramine/Intel layer cached.

ARG BASE_IMAGE=ubuntu:24.04

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS python-runtime

SHELL ["/bin/sh", "-eu", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8

# The distribution's own Python: Gramine's packages are built against it, and its
# interpreter and shared libraries are what the enclave manifest lists as trusted files.
# DL3008 (pin apt versions) is waived for the base distribution's own packages here and in
# sgx-keys: BASE_IMAGE's tag selects the release, and a pinned Debian/Ubuntu version vanishes
# from the archive at the next security update, which would break every build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------
FROM python-runtime AS toolkit-build

# Only what .dockerignore lets through: pyproject.toml, README.md, LICENSE, src/.
COPY . /src

# --no-compile: the enclave measures the venv file by file, and .pyc files carry the source's
# install-time mtime; leaving them out keeps the venv's bytes the same from build to build.
# pip's own wheel cache is not kept (--no-cache-dir), and the source tree stays in this stage.
RUN python3 -m venv /opt/mse/venv \
 && /opt/mse/venv/bin/pip install --no-cache-dir --no-compile /src \
 && find /opt/mse/venv -name __pycache__ -prune -exec rm -rf {} +

# ---------------------------------------------------------------------------------------------
FROM python-runtime AS runtime

# PATH puts the venv first, so `python3`, `pip3` and `pip` in a derived image's RUN are the
# venv's: `RUN pip3 install flask==2.2.2` installs next to the toolkit, into the environment the
# enclave trusts, with no PEP 668 refusal and no second interpreter.
# PYTHONDONTWRITEBYTECODE / PIP_COMPILE=no: a __pycache__ written at run time, or by a derived
# image's pip3 install, would put files into the trusted set whose bytes depend on when they were
# written, and so change MRENCLAVE from build to build. (PIP_COMPILE=no, not PIP_NO_COMPILE=1:
# pip reads a boolean environment variable as the value of the option it names, so
# PIP_NO_COMPILE=1 would turn compiling ON.)
ENV VIRTUAL_ENV=/opt/mse/venv \
    PATH=/opt/mse/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_COMPILE=no \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# /root/.config/gramine: where mse-run (like gramine-sgx-sign) looks for enclave-key.pem.
# /mse-app: the code directory mse-test serves by default (mount the app there).
RUN install -d -m 0700 /root/.config /root/.config/gramine \
 && install -d -m 0755 /mse-app

WORKDIR /root

# ---------------------------------------------------------------------------------------------
FROM runtime AS toolkit

COPY --from=toolkit-build /opt/mse/venv /opt/mse/venv

# Declared after the COPY so a new date or revision only rebuilds the label layer.
ARG BUILD_DATE=unknown
ARG VERSION=unknown
ARG VCS_REF=unknown
ARG SOURCE_URL=

LABEL org.opencontainers.image.title="mse-base (toolkit only, no Gramine)" \
      org.opencontainers.image.description="mse-base toolkit without Gramine or Intel SGX libraries: mse-test, mse-run --simulation, mse-verify" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}"

# No ENTRYPOINT: `docker run --entrypoint mse-run IMAGE ...` and `docker run IMAGE mse-test ...`
# both work.
CMD ["mse-run", "--help"]

# ---------------------------------------------------------------------------------------------
FROM python-runtime AS sgx-keys

# Base distribution packages, used in this stage only: see the DL3008 note in python-runtime.
# Before the ARGs below: a different mirror or key list must not reinstall these (an ARG
# declared earlier in the stage is part of every later RUN's cache key).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl gnupg \
 && rm -rf /var/lib/apt/lists/*

# Expected OpenPGP fingerprints of the primary keys in each downloaded keyring. A keyring holding
# any other primary key is refused, so a swapped file on either server fails the build.
# Gramine signs its trixie/noble-and-later suites with its 2024a and 2024b keys, older suites
# (bookworm, jammy) with its 2021 key (Documentation/verify-sig.rst in gramineproject/gramine);
# all three are accepted, so one list serves every base.
ARG GRAMINE_KEY_FINGERPRINTS="1CBF71E00FF0A5577A4EA6984B8D8EC2F8BE4647 71807D6094DDF649D9591A53B951298EB73C9392 EA3C2D624681AC968521587A5EE1171912234070"
# "Intel(R) Software Development Products", RSA-2048, created 2023-03-20, expires 2027-03-20.
ARG INTEL_SGX_KEY_FINGERPRINTS="150434D1488BF80308B69398E5C7F0FA1C6C6C3C"
# Suites default to the base's VERSION_CODENAME. Intel publishes Ubuntu suites only: on a Debian
# base, pass INTEL_SGX_SUITE (Gramine's instructions use jammy for Debian 12).
ARG GRAMINE_SUITE=
ARG INTEL_SGX_SUITE=
# The official repositories; a mirror can stand in (CI points these at a local server to test
# the fingerprint check with keys of its own).
ARG GRAMINE_REPO_URL=https://packages.gramineproject.io
ARG INTEL_SGX_REPO_URL=https://download.01.org/intel-sgx/sgx_repo/ubuntu

# check KEYRING EXPECTED...: every primary key must be an expected one, and there must be one.
RUN . /etc/os-release \
 && suite="${GRAMINE_SUITE:-${VERSION_CODENAME}}" \
 && intel_suite="${INTEL_SGX_SUITE:-${VERSION_CODENAME}}" \
 && check() { \
      keyring="$1"; shift; \
      gpg --batch --show-keys --with-colons "$keyring" > /tmp/keys.txt; \
      found="$(awk -F: '$1 == "pub" { want = 1; next } $1 == "fpr" && want { print $10; want = 0 }' /tmp/keys.txt)"; \
      [ -n "$found" ] || { echo "no key in $keyring" >&2; return 1; }; \
      for fpr in $found; do \
        case " $* " in *" $fpr "*) ;; *) echo "unexpected key $fpr in $keyring" >&2; return 1;; esac; \
      done; \
    } \
 && mkdir -p /keys \
 && curl -fsSLo /keys/gramine.gpg "${GRAMINE_REPO_URL}/gramine-keyring-${suite}.gpg" \
 && check /keys/gramine.gpg ${GRAMINE_KEY_FINGERPRINTS} \
 && curl -fsSLo /keys/intel-sgx.asc "${INTEL_SGX_REPO_URL}/intel-sgx-deb.key" \
 && check /keys/intel-sgx.asc ${INTEL_SGX_KEY_FINGERPRINTS} \
 && echo "deb [arch=amd64 signed-by=/etc/apt/keyrings/gramine.gpg] ${GRAMINE_REPO_URL}/ ${suite} main" > /keys/gramine.list \
 && echo "deb [arch=amd64 signed-by=/etc/apt/keyrings/intel-sgx.asc] ${INTEL_SGX_REPO_URL} ${intel_suite} main" > /keys/intel-sgx.list \
 && chmod 0644 /keys/*

# ---------------------------------------------------------------------------------------------
FROM runtime AS sgx-runtime

ARG GRAMINE_VERSION=1.9
# Intel ships two families with their own version numbers: the platform software (PSW: aesmd
# and its plugins, the PCE) and DCAP (quote library, quote provider library, QE3 logic).
ARG SGX_PSW_VERSION=2.29.100.1
ARG SGX_DCAP_VERSION=1.26.100.1
# Intel's Debian versions end in -<suite>1 (2.29.100.1-noble1).
ARG INTEL_SGX_SUITE=
# What comes from Intel's repository, and why (all pinned; see also README.md):
# - Quote generation never links an Intel library into the enclave or into mse-run: Gramine's
#   untrusted runtime sends the enclave's report to aesmd over /var/run/aesmd/aesm.socket, and
#   aesmd runs Intel's Quoting Enclave (QE3) and the Provisioning Certification Enclave (PCE)
#   to sign an ECDSA quote. With `docker run --device /dev/sgx_enclave --device
#   /dev/sgx_provision -v /var/run/aesmd:/var/run/aesmd`, the HOST's aesmd does this, with the
#   host's quote provider configuration.
# - sgx-aesm-service, libsgx-aesm-ecdsa-plugin, libsgx-aesm-pce-plugin,
#   libsgx-aesm-quote-ex-plugin: aesmd itself and the plugins that give it DCAP (ECDSA) quotes
#   through the quote-ex interface Gramine speaks, so that the image can run its own aesmd
#   (/opt/intel/sgx-aesm-service/aesm/aesm_service) on a host with the SGX driver but no aesmd.
# - libsgx-dcap-default-qpl: the quote provider library aesmd loads to fetch the platform's PCK
#   certificate from a PCCS (configured in /etc/sgx_default_qcnl.conf); the quote embeds it.
# Set INTEL_SGX_PACKAGES="" to rely on the host's aesmd only (the smallest image).
ARG INTEL_SGX_PACKAGES="sgx-aesm-service libsgx-aesm-ecdsa-plugin libsgx-aesm-pce-plugin libsgx-aesm-quote-ex-plugin libsgx-dcap-default-qpl"

COPY --from=sgx-keys /keys/gramine.gpg /keys/intel-sgx.asc /etc/apt/keyrings/
COPY --from=sgx-keys /keys/gramine.list /keys/intel-sgx.list /etc/apt/sources.list.d/

# Direct packages are asked for at an exact version (apt fails if it is missing); their Intel
# dependencies are held to the same release by the preferences file, so apt cannot mix releases.
# --no-install-recommends leaves out gramine-ratls-dcap and Intel's quote verification library:
# verification is mse-verify's job, on the client side.
# DL3008: every package is pinned, through "$pinned" built above, which hadolint cannot read.
# SC2086: ${pinned} is split into words on purpose (one `name=version` per package).
# hadolint ignore=DL3008,SC2086
RUN . /etc/os-release \
 && intel_suite="${INTEL_SGX_SUITE:-${VERSION_CODENAME}}" \
 && psw="${SGX_PSW_VERSION}-${intel_suite}1" \
 && dcap="${SGX_DCAP_VERSION}-${intel_suite}1" \
 && printf 'Package: %s\nPin: version %s\nPin-Priority: 1001\n\n' \
      "sgx-aesm-service libsgx-aesm-* libsgx-ae-pce libsgx-ae-le libsgx-enclave-common libsgx-urts libsgx-quote-ex libsgx-launch libsgx-headers" "$psw" \
      "libsgx-dcap-* libsgx-qe3-logic libsgx-pce-logic libsgx-ae-qe3 libsgx-ae-qve libsgx-ae-id-enclave libsgx-ae-tdqe libsgx-tdx-logic" "$dcap" \
      "gramine" "${GRAMINE_VERSION}" \
      > /etc/apt/preferences.d/mse-base-pins \
 && pinned="" \
 && for pkg in ${INTEL_SGX_PACKAGES}; do \
      case "$pkg" in \
        libsgx-dcap-*) pinned="$pinned $pkg=$dcap" ;; \
        *) pinned="$pinned $pkg=$psw" ;; \
      esac; \
    done \
 && apt-get update \
 && apt-get install -y --no-install-recommends "gramine=${GRAMINE_VERSION}" ${pinned} \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -m 0755 /var/run/aesmd \
 && gramine-sgx-sign --help >/dev/null

# ---------------------------------------------------------------------------------------------
FROM sgx-runtime AS mse-base

COPY --from=toolkit-build /opt/mse/venv /opt/mse/venv

# Declared after the COPY so a new date or revision only rebuilds the label layer.
ARG BUILD_DATE=unknown
ARG VERSION=unknown
ARG VCS_REF=unknown
ARG SOURCE_URL=

LABEL org.opencontainers.image.title="mse-base" \
      org.opencontainers.image.description="Run a Python web app in an Intel SGX enclave with Gramine, with RA-TLS" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}"

CMD ["mse-run", "--help"]

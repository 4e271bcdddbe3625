"""The quote verifier: every check, in order, failing closed.

1. parse the quote strictly;
2. PCK chain to the pinned trust root, QE report signature and binding, quote signature;
3. collateral: signatures, chain to the same root, CRLs (signatures, windows, revocation),
   FMSPC / PCE-ID match, TCB info / QE identity windows, QE identity vs the QE report;
4. TCB status and advisories (Intel QVL rules), filtered by the policy;
5. enclave identity against the policy.

Caching. A check whose outcome depends only on bytes (the PCK chain in the quote and the trust
root; the five collateral documents signed under the trust root, and the root; the PCK CRL and
the PCK CA that must have signed it) is memoised process-wide, in bounded LRU caches keyed by
exactly those bytes, so that every :class:`Verifier` in the process shares it. This is sound
because:

* the memoised functions read nothing but their arguments (no clock, no policy, no I/O), and
  certificates hash and compare by their DER, so equal keys mean equal inputs;
* only successes are stored: a failing check raises, and :func:`functools.lru_cache` does not
  remember exceptions, so the same bytes fail again on the next call;
* the stored values are immutable (frozen dataclasses, tuples, ``cryptography`` objects).

Never memoised, run on every call: the quote signature and the QE report signature and binding
(unique per quote), every validity window (certificates, TCB info, QE identity, CRL
``thisUpdate``/``nextUpdate``), revocation look-ups, FMSPC / PCE-ID match, QE identity match, TCB
status evaluation and the policy.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from mse_base._internal.dcap import chain, ratls
from mse_base._internal.dcap.collateral import (
    Collateral,
    CollateralSource,
    QeIdentity,
    TcbInfo,
    parse_qe_identity,
    parse_tcb_info,
    verified_signed_text,
)
from mse_base._internal.dcap.errors import (
    CertificateChainError,
    CollateralError,
    RevokedCertificateError,
    SignatureError,
)
from mse_base._internal.dcap.pck import PckExtensions, parse_pck_extensions
from mse_base._internal.dcap.quote import DIRECT_MEASUREMENT_MARK, Quote, parse_quote
from mse_base._internal.dcap.tcb import TcbVerdict, evaluate
from mse_base._internal.utc import iso
from mse_base.errors import FailedCheck, UsageError, VerificationError
from mse_base.verify.policy import Policy

_CACHE_LIMIT = 64

#: How the quoted MRENCLAVE was measured: ``"real"`` (by the CPU, under Intel's root; as
#: ``gramine-sgx-sign`` computes it, for Gramine without SGX, ``mse-run --direct``, under a
#: simulation CA) or ``"simulated"`` (the digest ``mse-run --simulation`` computes instead).
Measurement = Literal["real", "simulated"]


@dataclass(frozen=True)
class VerificationResult:
    """What a successfully verified quote proves, and which checks proved it.

    ``checks`` lists, in order: ``quote.format``, ``pck.chain``, ``qe_report.signature``,
    ``qe_report.binding``, ``quote.signature``, ``collateral.signatures``,
    ``collateral.crl_signatures``, ``collateral.platform``, ``collateral.freshness``,
    ``collateral.revocation``, ``qe.identity``, ``tcb.status``, ``enclave.identity``;
    :meth:`Verifier.verify_certificate` adds ``ratls.self_signature``, ``ratls.validity`` before
    them and one ``ratls.key_binding:<rule>`` per quote-carrying extension after.

    ``simulation`` says the quote was checked against a simulation CA (not SGX hardware);
    ``measurement`` whether its MRENCLAVE is then the real one (``mse-run --direct``) or a
    simulated one (``mse-run --simulation``), as the simulation PKI certified it (see
    :data:`Measurement`). Under Intel's root it is always ``"real"``.
    """

    mrenclave: bytes
    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes
    debug: bool
    tcb_status: str
    advisory_ids: tuple[str, ...]
    simulation: bool
    measurement: Measurement
    fmspc: str
    checks: tuple[str, ...]
    quote: Quote

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary: the README's JSON fields from ``mrenclave`` on (bytes as
        lowercase hex; the quote as its SHA-256), as :meth:`PartialResult.to_json` writes them.
        """
        return PartialResult.of(self).to_json()


@dataclass(frozen=True)
class PartialResult:
    """What a rejected quote or certificate had shown before the check that failed: the
    ``partial`` of the :class:`~mse_base.errors.VerificationError`, next to its
    ``failed_check``.

    The fields are :class:`VerificationResult`'s; each is ``None`` until the check that
    establishes it has passed, so nothing here is a claim no check backed:

    * ``fmspc`` once the PCK chain verified (``pck.chain`` in ``checks``);
    * the enclave identity (``mrenclave``, ``mrsigner``, ``isv_prod_id``, ``isv_svn``,
      ``report_data``, ``debug``, and how MRENCLAVE was measured, ``measurement``) once the key
      that signed the quote is trusted: its PCK not
      revoked and its holder Intel's quoting enclave (``qe.identity``, after
      ``collateral.revocation``), so only a ``tcb.*`` or ``policy.*`` rejection has it;
    * ``tcb_status`` and ``advisory_ids`` once the TCB level was evaluated, so a ``policy.*``
      or ``tcb.revoked`` rejection has them all.

    ``checks`` lists the checks that passed, named as in :attr:`VerificationResult.checks`.
    ``quote`` is the parsed quote once it parsed (for diagnostics: its fields are authenticated
    only once ``qe.identity`` passed).
    """

    mrenclave: bytes | None = None
    mrsigner: bytes | None = None
    isv_prod_id: int | None = None
    isv_svn: int | None = None
    report_data: bytes | None = None
    debug: bool | None = None
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] | None = None
    simulation: bool = False
    measurement: Measurement | None = None
    fmspc: str | None = None
    checks: tuple[str, ...] = ()
    quote: Quote | None = None

    @classmethod
    def of(cls, result: VerificationResult) -> PartialResult:
        """Everything ``result`` established (a later check, across quotes, failed)."""
        # The two classes have the same fields (a test pins it).
        return cls(**{f.name: getattr(result, f.name) for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, Any]:
        """The one JSON form of a verdict's findings, verified or not: the README's JSON fields
        from ``mrenclave`` on (mse-verify ``--json`` adds ``verified``, ``failed_check`` and
        ``reasons`` before them); ``null`` for what was not established."""
        return {
            "mrenclave": _hex(self.mrenclave),
            "mrsigner": _hex(self.mrsigner),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "report_data": _hex(self.report_data),
            "debug": self.debug,
            "tcb_status": self.tcb_status,
            "advisory_ids": None if self.advisory_ids is None else list(self.advisory_ids),
            "simulation": self.simulation,
            "measurement": self.measurement,
            "fmspc": self.fmspc,
            "checks": list(self.checks),
            "quote_sha256": (
                None if self.quote is None else hashlib.sha256(self.quote.raw).hexdigest()
            ),
        }


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


#: The check after which the report body is authenticated (see :meth:`_Progress.partial`).
_IDENTITY_ESTABLISHED_BY = "qe.identity"


class _Progress:
    """What :meth:`Verifier.verify_quote` has established so far: a rejection's partial."""

    def __init__(self, simulation: bool) -> None:
        self.simulation = simulation
        self.checks: list[str] = []
        self.quote: Quote | None = None
        self.fmspc: str | None = None
        self.verdict: TcbVerdict | None = None

    def passed(self, *names: str) -> None:
        self.checks += names

    def partial(self) -> PartialResult:
        # The quote signature only proves the attestation key signed the report body. That key
        # is Intel's word only once the PCK that certified it is not revoked
        # (collateral.revocation) and the enclave that holds it is Intel's quoting enclave
        # (qe.identity, the last of them): a revoked PCK's key, or another enclave given the
        # provisioning key, can sign any body. Before that, the identity is an attacker's claim.
        body = (
            self.quote.report_body
            if self.quote is not None and _IDENTITY_ESTABLISHED_BY in self.checks
            else None
        )
        verdict = self.verdict
        return PartialResult(
            mrenclave=None if body is None else body.mr_enclave,
            mrsigner=None if body is None else body.mr_signer,
            isv_prod_id=None if body is None else body.isv_prod_id,
            isv_svn=None if body is None else body.isv_svn,
            report_data=None if body is None else body.report_data,
            debug=None if body is None else body.debug,
            tcb_status=None if verdict is None else verdict.status,
            advisory_ids=None if verdict is None else verdict.advisory_ids,
            simulation=self.simulation,
            measurement=None if body is None else _measurement(self.quote, self.simulation),
            fmspc=self.fmspc,
            checks=tuple(self.checks),
            quote=self.quote,
        )


def _measurement(quote: Quote | None, simulation: bool) -> Measurement:
    """How the quote's MRENCLAVE was measured; read only once ``qe_report.binding`` passed.

    Under Intel's root the CPU measured it, whatever the QE authentication data holds. Under a
    simulation CA it is simulated unless the PKI certified the real one: the QE report, signed
    by the simulation PCK key, binds the authentication data that says so (``mse-run
    --direct``); anything else, and any other PKI's quote, stays "simulated".
    """
    if not simulation:
        return "real"
    if quote is not None and quote.qe_auth_data == DIRECT_MEASUREMENT_MARK:
        return "real"
    return "simulated"


@dataclass(frozen=True)
class _PckChain:
    leaf: x509.Certificate
    ca: x509.Certificate
    leaf_key: ec.EllipticCurvePublicKey
    extensions: PckExtensions
    pck_ca_kind: str


class _SignedDocuments(NamedTuple):
    """The collateral documents signed under the trust root itself, as a cache key."""

    tcb_info: bytes
    qe_identity: bytes
    tcb_info_issuer_chain: bytes
    qe_identity_issuer_chain: bytes
    root_ca_crl: bytes


@dataclass(frozen=True)
class _CheckedCollateral:
    tcb_info: TcbInfo
    qe_identity: QeIdentity
    signers: tuple[x509.Certificate, ...]
    root_crl: x509.CertificateRevocationList


def _check_window(
    start: datetime,
    end: datetime,
    at: datetime,
    what: str,
    not_yet_valid: FailedCheck,
    expired: FailedCheck,
) -> None:
    if at < start:
        raise CollateralError(
            f"{what}: issued {iso(start)}, after the verification time {iso(at)}",
            check=not_yet_valid,
        )
    if at > end:
        raise CollateralError(
            f"{what}: expired at {iso(end)} (nextUpdate), before the verification time {iso(at)}",
            check=expired,
        )


class Verifier:
    """Verifies SGX ECDSA v3 quotes and RA-TLS certificates against a :class:`Policy`.

    ``collateral`` is either a fixed :class:`Collateral` or a :class:`CollateralSource` asked for
    the quote's FMSPC. ``trust_root`` defaults to the pinned Intel SGX Root CA; another root is
    accepted only together with ``simulation=True`` (the simulation CA), and then every result
    says ``simulation=True``. Bad arguments, among them a ``trust_root`` that is not a
    self-signed ECDSA P-256 CA, raise :class:`~mse_base.errors.UsageError`; a packaged Intel
    root that lost its pinned key (a damaged installation) raises
    :class:`~mse_base.errors.EnvironmentMissing`. Neither is a rejected quote.
    """

    def __init__(
        self,
        *,
        collateral: Collateral | CollateralSource,
        policy: Policy = Policy(),  # noqa: B008 (a frozen value; sharing it is safe)
        trust_root: x509.Certificate | None = None,
        simulation: bool = False,
    ) -> None:
        intel = chain.intel_sgx_root()
        if trust_root is not None and not isinstance(trust_root, x509.Certificate):
            raise UsageError(
                f"trust_root must be an x509.Certificate, not {type(trust_root).__name__}"
            )
        if trust_root is None:
            if simulation:
                raise UsageError("simulation=True needs trust_root=<the simulation CA certificate>")
            trust_root = intel
        else:
            # Intel's root is pinned by its key; any other root is trusted by configuration, and
            # a bad one is bad input (UsageError), whichever way it is bad.
            chain.check_trust_root(trust_root)
            if chain.spki_sha256(trust_root) == chain.INTEL_SGX_ROOT_SPKI_SHA256:
                if simulation:
                    raise UsageError(
                        "simulation=True with the Intel SGX Root CA as trust_root: a real quote "
                        "would be labelled as simulated; drop simulation=True"
                    )
            elif not simulation:
                raise UsageError(
                    "trust_root is not the Intel SGX Root CA; another root is only accepted "
                    "with simulation=True (the mse-base simulation CA)"
                )
        self._collateral = collateral
        self._policy = policy
        self._root = trust_root
        self._simulation = simulation

    # --- public ---------------------------------------------------------------------------

    def verify_quote(self, quote: bytes, *, at: datetime | None = None) -> VerificationResult:
        """Run every check on ``quote`` at time ``at`` (default: now). Raises on any failure,
        with the failed check's name and what was established before it (``failed_check`` and
        ``partial`` of the :class:`~mse_base.errors.VerificationError`).
        """
        at = _utc(at)
        progress = _Progress(self._simulation)
        try:
            return self._verify_quote(quote, at, progress)
        except VerificationError as err:
            err.partial = progress.partial()
            raise

    def _verify_quote(self, quote: bytes, at: datetime, progress: _Progress) -> VerificationResult:
        parsed = parse_quote(quote)
        progress.quote = parsed
        progress.passed("quote.format")

        pck = _checked_pck_chain(parsed.pck_chain_pem, self._root)
        for cert, what in ((pck.leaf, "PCK leaf"), (pck.ca, "PCK CA"), (self._root, "root CA")):
            chain.check_validity(cert, at, f"PCK chain: {what}", chain.PCK_CHAIN)
        progress.fmspc = pck.extensions.fmspc.hex()
        progress.passed("pck.chain")

        self._check_qe_report_signature(parsed, pck)
        progress.passed("qe_report.signature")
        self._check_qe_report_binding(parsed)
        progress.passed("qe_report.binding")
        self._check_quote_signature(parsed)
        progress.passed("quote.signature")

        collateral = self._collateral.collateral_for(
            fmspc=pck.extensions.fmspc.hex(), pck_ca=pck.pck_ca_kind, at=at
        )
        if not isinstance(collateral, Collateral):
            raise CollateralError(
                f"collateral source returned {type(collateral).__name__}, not Collateral",
                check="collateral.unavailable",
            )
        documents = _collateral_bytes(collateral)
        signed = _SignedDocuments(**{name: documents[name] for name in _SignedDocuments._fields})
        checked = _checked_collateral(signed, self._root)
        progress.passed("collateral.signatures")
        pck_crl = _checked_pck_crl(documents["pck_crl"], pck.ca)
        progress.passed("collateral.crl_signatures")
        self._check_platform_match(checked.tcb_info, pck.extensions)
        progress.passed("collateral.platform")
        self._check_collateral_time(checked, pck_crl, at)
        progress.passed("collateral.freshness")
        self._check_revocation(checked, pck_crl, pck)
        progress.passed("collateral.revocation")
        self._check_qe_identity(checked.qe_identity, parsed)
        progress.passed("qe.identity")

        verdict = evaluate(
            checked.tcb_info,
            checked.qe_identity,
            components=pck.extensions.tcb_components,
            pcesvn=pck.extensions.pcesvn,
            qe_isvsvn=parsed.qe_report.isv_svn,
        )
        progress.verdict = verdict
        self._policy.check_tcb_status(verdict.status, verdict.advisory_ids)
        progress.passed("tcb.status")

        self._policy.check_enclave(parsed.report_body)
        progress.passed("enclave.identity")

        body = parsed.report_body
        return VerificationResult(
            mrenclave=body.mr_enclave,
            mrsigner=body.mr_signer,
            isv_prod_id=body.isv_prod_id,
            isv_svn=body.isv_svn,
            report_data=body.report_data,
            debug=body.debug,
            tcb_status=verdict.status,
            advisory_ids=verdict.advisory_ids,
            simulation=self._simulation,
            measurement=_measurement(parsed, self._simulation),
            fmspc=pck.extensions.fmspc.hex(),
            checks=tuple(progress.checks),
            quote=parsed,
        )

    def verify_certificate(
        self, cert: bytes | x509.Certificate, *, at: datetime | None = None
    ) -> VerificationResult:
        """Verify an RA-TLS certificate: its own signature and validity, and every piece of
        evidence it carries (a Gramine >= 1.8 certificate has two quotes: the legacy one and the
        TCG DICE one). Each must bind the certificate's public key by its own rule, which is
        checked before any quote is verified (so before any collateral is fetched); then every
        distinct quote is verified and all must agree on the enclave and its TCB status.

        The result is the first evidence's (TCG DICE when present, as Gramine's verifier
        prefers it), with one ``ratls.key_binding:<rule>`` check per evidence. A rejection's
        ``partial`` lists the RA-TLS checks that passed besides the quote's.
        """
        at = _utc(at)
        passed: list[str] = []
        try:
            evidence, bindings = self._check_certificate(cert, at, passed)
        except VerificationError as err:
            err.partial = PartialResult(simulation=self._simulation, checks=tuple(passed))
            raise
        key_bindings = tuple(f"ratls.key_binding:{binding}" for binding in bindings)
        results = []
        for quote in dict.fromkeys(item.quote for item in evidence):
            try:
                results.append(self.verify_quote(quote, at=at))
            except VerificationError as err:
                inner = err.partial
                if inner is None:  # verify_quote always sets it; a subclass might not
                    inner = PartialResult(simulation=self._simulation)
                err.partial = replace(inner, checks=(*passed, *inner.checks, *key_bindings))
                raise
        result = replace(results[0], checks=(*passed, *results[0].checks, *key_bindings))
        try:
            self._check_results_agree(results)
        except VerificationError as err:
            err.partial = PartialResult.of(result)
            raise
        return result

    @staticmethod
    def _check_certificate(
        cert: bytes | x509.Certificate, at: datetime, passed: list[str]
    ) -> tuple[tuple[ratls.Evidence, ...], list[ratls.KeyBinding]]:
        """The RA-TLS checks before any quote is verified; ``passed`` collects their names."""
        # cryptography parses certificate fields lazily, so a malformed one can surface as
        # ValueError (or one of its specific exceptions) from any accessor: all of them are a
        # failed check here, never a crash.
        malformed = (
            ValueError,
            TypeError,
            UnsupportedAlgorithm,
            x509.DuplicateExtension,
            x509.UnsupportedGeneralNameType,
        )
        try:
            if not isinstance(cert, x509.Certificate):
                cert = ratls.load_certificate(bytes(cert))
            ratls.check_self_signature(cert)
            passed.append("ratls.self_signature")
            chain.check_validity(cert, at, "RA-TLS certificate", chain.RATLS_CERTIFICATE)
            passed.append("ratls.validity")
            evidence = ratls.extract_evidence(cert)
            bindings = [
                ratls.check_evidence_binding(
                    cert, item, parse_quote(item.quote).report_body.report_data
                )
                for item in evidence
            ]
        except malformed as exc:
            raise CertificateChainError(
                f"RA-TLS certificate: malformed ({exc})", check="ratls.format"
            ) from None
        return evidence, bindings

    @staticmethod
    def _check_results_agree(results: list[VerificationResult]) -> None:
        """The quotes of one RA-TLS certificate must describe the same enclave: otherwise a verifier
        that reads only one of them (Gramine's reads only the DICE one) would see another enclave.
        """
        first = results[0]
        for other in results[1:]:
            for field, label in (
                ("mrenclave", "MRENCLAVE"),
                ("mrsigner", "MRSIGNER"),
                ("isv_prod_id", "ISV product ID"),
                ("isv_svn", "ISV SVN"),
                ("debug", "debug flag"),
                ("tcb_status", "TCB status"),
                ("measurement", "measurement (real or simulated)"),
            ):
                mine, theirs = getattr(first, field), getattr(other, field)
                if mine != theirs:
                    shown = [v.hex() if isinstance(v, bytes) else v for v in (mine, theirs)]
                    raise VerificationError(
                        f"RA-TLS certificate: its quotes disagree on the {label} "
                        f"({shown[0]} vs {shown[1]})",
                        check="ratls.quotes_disagree",
                    )

    # --- quote-side checks ----------------------------------------------------------------

    @staticmethod
    def _check_qe_report_signature(quote: Quote, pck: _PckChain) -> None:
        if not chain.verify_raw_ecdsa(pck.leaf_key, quote.qe_report_signature, quote.qe_report.raw):
            raise SignatureError(
                "QE report signature: does not verify with the PCK leaf certificate's key",
                check="qe_report.signature",
            )

    @staticmethod
    def _check_qe_report_binding(quote: Quote) -> None:
        expected = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest()
        report_data = quote.qe_report.report_data
        if report_data[:32] != expected or any(report_data[32:]):
            raise SignatureError(
                "QE report binding: QE report_data is not SHA-256(attestation key || QE auth "
                "data) followed by 32 zero bytes",
                check="qe_report.binding",
            )

    @staticmethod
    def _check_quote_signature(quote: Quote) -> None:
        try:
            att_key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b"\x04" + quote.attestation_key
            )
        except ValueError:
            raise SignatureError(
                "quote signature: the attestation key is not a P-256 point",
                check="quote.signature",
            ) from None
        if not chain.verify_raw_ecdsa(att_key, quote.signature, quote.signed_bytes):
            raise SignatureError(
                "quote signature: does not verify over the header and report body with the "
                "attestation key",
                check="quote.signature",
            )

    # --- collateral -----------------------------------------------------------------------

    def _check_collateral_time(
        self,
        checked: _CheckedCollateral,
        pck_crl: x509.CertificateRevocationList,
        at: datetime,
    ) -> None:
        for signer in checked.signers:
            try:
                chain.check_validity(signer, at, "TCB signing certificate", chain.SIGNING_CHAIN)
            except CertificateChainError as exc:
                raise CollateralError(str(exc), check=exc.failed_check) from None
        info, identity = checked.tcb_info, checked.qe_identity
        _check_window(
            info.issue_date,
            info.next_update,
            at,
            "TCB info",
            "collateral.tcb_info.not_yet_valid",
            "collateral.tcb_info.expired",
        )
        _check_window(
            identity.issue_date,
            identity.next_update,
            at,
            "QE identity",
            "collateral.qe_identity.not_yet_valid",
            "collateral.qe_identity.expired",
        )
        stale = self._policy.allow_stale_crls
        chain.check_crl_window(pck_crl, at, "PCK CRL", chain.PCK_CRL, allow_stale=stale)
        chain.check_crl_window(
            checked.root_crl, at, "root CA CRL", chain.ROOT_CA_CRL, allow_stale=stale
        )

    @staticmethod
    def _check_revocation(
        checked: _CheckedCollateral, pck_crl: x509.CertificateRevocationList, pck: _PckChain
    ) -> None:
        revoked: list[
            tuple[x509.CertificateRevocationList, x509.Certificate, str, str, FailedCheck]
        ] = [
            (pck_crl, pck.leaf, "PCK leaf certificate", "PCK CRL", "pck.revoked"),
            (checked.root_crl, pck.ca, "PCK CA certificate", "root CA CRL", "pck.revoked"),
            *(
                (
                    checked.root_crl,
                    s,
                    "TCB signing cert",
                    "root CA CRL",
                    "collateral.signing_chain.revoked",
                )
                for s in checked.signers
            ),
        ]
        for crl, cert, what, crl_name, failed in revoked:
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None:
                raise RevokedCertificateError(
                    f"revocation: the {what} (serial {cert.serial_number:x}) is revoked in the "
                    f"{crl_name} since {iso(entry.revocation_date_utc)}",
                    check=failed,
                )

    @staticmethod
    def _check_platform_match(info: TcbInfo, ext: PckExtensions) -> None:
        if info.fmspc != ext.fmspc:
            raise CollateralError(
                f"TCB info: FMSPC {info.fmspc.hex()} is not the PCK certificate's "
                f"{ext.fmspc.hex()}; fetch the TCB info for this platform",
                check="collateral.platform",
            )
        if info.pce_id != ext.pce_id:
            raise CollateralError(
                f"TCB info: PCE-ID {info.pce_id.hex()} is not the PCK certificate's "
                f"{ext.pce_id.hex()}",
                check="collateral.platform",
            )

    @staticmethod
    def _check_qe_identity(identity: QeIdentity, quote: Quote) -> None:
        qe = quote.qe_report
        if qe.mr_signer != identity.mrsigner:
            raise CollateralError(
                f"QE identity: the QE's MRSIGNER {qe.mr_signer.hex()} is not "
                f"{identity.mrsigner.hex()}",
                check="qe.identity",
            )
        if qe.isv_prod_id != identity.isvprodid:
            raise CollateralError(
                f"QE identity: the QE's ISV product ID {qe.isv_prod_id} is not "
                f"{identity.isvprodid}",
                check="qe.identity",
            )
        if qe.misc_select & identity.miscselect_mask != identity.miscselect:
            raise CollateralError(
                "QE identity: the QE's MISCSELECT does not match", check="qe.identity"
            )
        masked = bytes(a & m for a, m in zip(qe.attributes, identity.attributes_mask, strict=True))
        if masked != identity.attributes:
            raise CollateralError(
                "QE identity: the QE's ATTRIBUTES do not match", check="qe.identity"
            )


# --- process-wide memos of pure functions of bytes (see the module docstring) ----------------


def _collateral_bytes(collateral: Collateral) -> dict[str, bytes]:
    """:class:`Collateral`'s documents by field name, as exact ``bytes``: the cache keys and
    the only input of the checks."""
    documents = {}
    for field in dataclasses.fields(Collateral):
        value = getattr(collateral, field.name)
        if not isinstance(value, bytes):
            raise CollateralError(
                f"collateral {field.name}: expected bytes", check="collateral.unavailable"
            )
        # A bytes subclass could redefine equality and hashing, and so alias another cache
        # entry; an exact copy cannot (bytes(x) is x itself when x is exactly bytes).
        documents[field.name] = bytes(value)
    return documents


@functools.lru_cache(maxsize=_CACHE_LIMIT)
def _checked_pck_chain(pem: bytes, root: x509.Certificate) -> _PckChain:
    """Everything about the quote's PCK chain that does not depend on the time."""
    checks = chain.PCK_CHAIN
    leaf, ca, root_copy = chain.load_pem_chain(pem, "PCK certificate chain in the quote", 3, checks)
    intel = chain.spki_sha256(root) == chain.INTEL_SGX_ROOT_SPKI_SHA256
    chain.check_root_copy(
        root_copy,
        root,
        "PCK chain " + ("(Intel SGX Root CA)" if intel else "(simulation CA)"),
        checks,
    )
    # Signatures first: after them, every other field is the issuer's word.
    chain.check_issued_by(ca, root, "PCK chain: PCK CA", checks)
    chain.check_issued_by(leaf, ca, "PCK chain: PCK leaf", checks)
    chain.check_ca(ca, "PCK chain: PCK CA", checks, ca=True)
    chain.check_ca(leaf, "PCK chain: PCK leaf", checks, ca=False)
    issuer_cn = " ".join(
        str(a.value) for a in ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    ).lower()
    if "processor" in issuer_cn:
        kind = "processor"
    elif "platform" in issuer_cn:
        kind = "platform"
    else:
        raise CertificateChainError(
            f"PCK chain: cannot tell the PCK CA kind from its name {issuer_cn!r} "
            "(expected a Processor or Platform CA)",
            check="pck.chain",
        )
    return _PckChain(
        leaf=leaf,
        ca=ca,
        leaf_key=chain.ec_p256_key(leaf, "PCK leaf", checks),
        extensions=parse_pck_extensions(leaf),
        pck_ca_kind=kind,
    )


def _signing_chain(pem: bytes, root: x509.Certificate, what: str) -> x509.Certificate:
    try:
        return chain.issuer_under_root(
            pem, root, what, "TCB signing certificate", chain.SIGNING_CHAIN, ca=False
        )
    except CertificateChainError as exc:
        raise CollateralError(str(exc), check=exc.failed_check) from None


@functools.lru_cache(maxsize=_CACHE_LIMIT)
def _checked_collateral(documents: _SignedDocuments, root: x509.Certificate) -> _CheckedCollateral:
    """Signatures, chains and parsing of the collateral signed under the root itself (all but
    the PCK CRL, which the quote's PCK CA signs); everything but their time checks.
    """
    tcb_info, qe_identity, tcb_chain, qe_chain, root_ca_crl = documents
    tcb_signer = _signing_chain(tcb_chain, root, "TCB info issuer chain")
    if qe_chain == tcb_chain:
        qe_signer = tcb_signer
    else:
        qe_signer = _signing_chain(qe_chain, root, "QE identity issuer chain")

    tcb_text = verified_signed_text(tcb_info, "tcbInfo", tcb_signer)
    qe_text = verified_signed_text(qe_identity, "enclaveIdentity", qe_signer)

    root_crl = chain.load_crl(root_ca_crl, "root CA CRL", chain.ROOT_CA_CRL)
    chain.check_crl_signed_by(root_crl, root, "root CA CRL", chain.ROOT_CA_CRL)
    return _CheckedCollateral(
        tcb_info=parse_tcb_info(tcb_text),
        qe_identity=parse_qe_identity(qe_text),
        signers=(tcb_signer,) if qe_signer is tcb_signer else (tcb_signer, qe_signer),
        root_crl=root_crl,
    )


@functools.lru_cache(maxsize=4 * _CACHE_LIMIT)
def _checked_pck_crl(der: bytes, issuer: x509.Certificate) -> x509.CertificateRevocationList:
    """The PCK CRL in ``der``, signed by the quote's PCK CA ``issuer``."""
    crl = chain.load_crl(der, "PCK CRL", chain.PCK_CRL)
    chain.check_crl_signed_by(crl, issuer, "PCK CRL", chain.PCK_CRL)
    return crl


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(timezone.utc)
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise UsageError("verification time must be a timezone-aware datetime (e.g. UTC)")
    return at.astimezone(timezone.utc)


__all__ = ["PartialResult", "VerificationError", "VerificationResult", "Verifier"]

"""The simulation: the stand-in for SGX hardware and Intel's PCS.

Owns a local CA, PCK certificates, quotes and collateral in Intel's formats (``pki``), so that
the whole pipeline and the verifier run without SGX (a verifier accepts these quotes only when
told to trust the simulation CA); what ``--direct`` hands the enclave (``direct``); and the
stand-in for the CPU's MRENCLAVE sealing key (``sealing``).

May import ``mse_base.errors``, the shared ``files`` and ``utc``, ``dcap`` (the quote and PCK
layouts it mimics) and ``enclave.sigstruct`` (the attribute flags).
"""

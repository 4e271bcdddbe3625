"""Enclave sizes: Gramine's ``sgx.enclave_size`` must be a power of two."""

from __future__ import annotations

import re

from mse_base.errors import UsageError

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_SIZE = re.compile(r"^([1-9][0-9]*)([KMG])$")
# Below this, CPython, its libraries and Gramine's own footprint do not fit.
MIN_SIZE = 256 << 20
MAX_SIZE = 1 << 40


def format_size(value: int) -> str:
    for unit in ("G", "M", "K"):
        if value % _UNITS[unit] == 0:
            return f"{value // _UNITS[unit]}{unit}"
    return str(value)


def parse_enclave_size(text: str) -> int:
    """Parse ``512M``/``8G``-style sizes, accepting only what Gramine accepts as enclave size."""
    match = _SIZE.match(text.strip().upper())
    if match is None:
        raise UsageError(
            f"--size {text!r} is not a size: use a power of two with a unit, such as 512M, 2G or 8G"
        )
    value = int(match.group(1)) * _UNITS[match.group(2)]
    if value & (value - 1):
        lower = 1 << (value.bit_length() - 1)
        upper = lower << 1
        raise UsageError(
            f"--size {text} is not a power of two, which SGX enclaves require: "
            f"use {format_size(lower)} or {format_size(upper)}"
        )
    if value < MIN_SIZE:
        raise UsageError(f"--size {text} is too small for Python: use at least 256M")
    if value > MAX_SIZE:
        raise UsageError(f"--size {text} is larger than 1024G: use a smaller power of two")
    return value

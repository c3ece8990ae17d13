"""UCS-2 as SMPP peers send it: UTF-16BE, with surrogate pairs beyond the BMP."""

from __future__ import annotations


def encode(text: str) -> bytes:
    """Encode as UTF-16BE; a lone surrogate in ``text`` is written as its own code unit."""
    # surrogatepass: every str is writable in UCS-2, which lets the footer logic fall back on it.
    return text.encode("utf-16-be", "surrogatepass")


def decode(data: bytes) -> str:
    """Decode UTF-16BE; a lone surrogate or a trailing odd octet becomes U+FFFD."""
    return data.decode("utf-16-be", "replace")


def units_of(ch: str) -> int:
    """16-bit code units one character needs: 2 beyond the BMP, else 1."""
    return 2 if ord(ch) > 0xFFFF else 1


def unit_len(text: str) -> int:
    """Length in 16-bit code units (what the 70 / 67 / 66 capacities count)."""
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)

"""Relay global IDs: base64url("Type:key")."""

from __future__ import annotations

import base64
import binascii
import functools
import uuid

from giftgraph.errors import NotFound

_URLSAFE = bytes.maketrans(b"+/", b"-_")  # base64 → base64url


@functools.lru_cache(maxsize=16384, typed=True)  # typed: 1 and True are different keys
def encode_id(type_name: str, key: uuid.UUID | int | str) -> str:
    # Runs for every object of every page: remembered for the ones read again (~3 MB at
    # most), and binascii, not base64.urlsafe_b64encode (same bytes, without its layers).
    return binascii.b2a_base64(f"{type_name}:{key}".encode(), newline=False) \
        .translate(_URLSAFE).rstrip(b"=").decode()


def split_id(gid: str) -> tuple[str, str]:
    """Return (type, key) of a global ID; any malformed ID is simply not found."""
    try:
        padded = gid + "=" * (-len(gid) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise NotFound() from exc
    type_name, sep, key = raw.partition(":")
    if not sep or not type_name or not key:
        raise NotFound()
    return type_name, key


def decode_id(gid: str, expected: str) -> uuid.UUID:
    """The UUID behind a global ID of type `expected`, or NOT_FOUND (as for a missing ID)."""
    type_name, key = split_id(gid)
    if type_name != expected:
        raise NotFound(expected)
    try:
        return uuid.UUID(key)
    except ValueError as exc:
        raise NotFound(expected) from exc


def decode_optional(gid: str | None, expected: str) -> uuid.UUID | None:
    return None if gid is None else decode_id(gid, expected)


BIGINT_MAX = 2**63 - 1


def event_id(family_id: uuid.UUID, seq: int) -> str:
    """An Event's global ID: its family and its seq (seqs count per family)."""
    return encode_id("Event", f"{family_id}:{seq}")


def decode_event_key(key: str) -> tuple[uuid.UUID, int]:
    """(family, seq) of an Event ID's key (`split_id`); anything else is NOT_FOUND."""
    family, _, seq = key.rpartition(":")
    if not (0 < len(seq) <= 19 and seq.isascii() and seq.isdigit()) \
            or int(seq) > BIGINT_MAX:
        raise NotFound()
    try:
        return uuid.UUID(family), int(seq)
    except ValueError as exc:
        raise NotFound() from exc

"""Relay global IDs: base64url("Type:key"), and the one strict base64url decoder.

IDs and cursors are opaque tokens this service writes; it reads back only what it could
have written. Python's parsers are lenient (base64 ignores padding and stray bits,
`uuid.UUID` takes braces, `urn:uuid:`, upper case and no hyphens, `int` takes non-ASCII
digits and `_`), so each token is parsed and then written again: a token that does not
come out the same is refused. Every spelling of an entity is then one string, which is
what topics, caches and comparisons rely on.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import uuid

from giftgraph.errors import NotFound

_URLSAFE = bytes.maketrans(b"+/", b"-_")  # base64 → base64url
_B64URL = re.compile(r"[A-Za-z0-9_-]*")  # ASCII only (no re.UNICODE class in it)
MAX_TOKEN = 4096  # characters; a cursor holds at most a 200-character name and two keys
BIGINT_MAX = 2**63 - 1
# An Event's key is its family and its seq ("<uuid>:<seq>", seqs count per family); every
# other type's is a UUID.
EventKey = tuple[uuid.UUID, int]


def b64url_encode(raw: bytes) -> str:
    """Unpadded base64url: binascii, not base64.urlsafe_b64encode (same bytes, no layers)."""
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def b64url_decode(text: object) -> bytes | None:
    """The bytes of unpadded base64url text exactly as `b64url_encode` writes it, or None
    (padding, the standard alphabet, whitespace, stray low bits: all refused)."""
    if not isinstance(text, str) or len(text) > MAX_TOKEN or len(text) % 4 == 1 \
            or not _B64URL.fullmatch(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if b64url_encode(raw) == text else None


@functools.lru_cache(maxsize=16384, typed=True)  # typed: 1 and True are different keys
def encode_id(type_name: str, key: uuid.UUID | int | str) -> str:
    # Runs for every object of every page: remembered for the ones read again (~3 MB at most).
    if key is None:  # a row not yet flushed: "GiftList:None" would be an id, and a topic
        raise ValueError(f"no key to encode for a {type_name}")
    return b64url_encode(f"{type_name}:{key}".encode())


def parse_uuid(text: str) -> uuid.UUID | None:
    """A UUID written as str(uuid) writes it (lower case, hyphens, no braces), or None."""
    if len(text) != 36:
        return None
    try:
        pk = uuid.UUID(text)
    except ValueError:
        return None
    return pk if str(pk) == text else None


def parse_seq(text: str) -> int | None:
    """A positive bigint written as str(int) writes it (ASCII digits, no sign, no leading
    zero, no `_`), or None."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or text[0] == "0":
        return None
    seq = int(text)
    return seq if seq <= BIGINT_MAX else None


def parse_event_key(key: str) -> EventKey | None:
    """(family, seq) of an Event's key in its one spelling, or None."""
    family, sep, seq = key.rpartition(":")
    family_id, number = parse_uuid(family), parse_seq(seq)
    return (family_id, number) if sep and family_id and number else None


def parse_key(type_name: str, key: str) -> uuid.UUID | EventKey | None:
    """The key of a `type_name` ID in its one canonical spelling, or None."""
    return parse_event_key(key) if type_name == "Event" else parse_uuid(key)


def parse_id(gid: object) -> tuple[str, uuid.UUID | EventKey]:
    """(type, key) of a well-formed global ID; anything else is NOT_FOUND, as a missing ID."""
    raw = b64url_decode(gid)
    if raw is None:
        raise NotFound()
    try:
        text = raw.decode("utf-8")
    except UnicodeError as exc:
        raise NotFound() from exc
    type_name, sep, key = text.partition(":")
    if not sep or not type_name.isascii() or not type_name.isalpha():
        raise NotFound()
    parsed = parse_key(type_name, key)
    if parsed is None:
        raise NotFound()
    return type_name, parsed


def decode_id(gid: object, expected: str) -> uuid.UUID:
    """The UUID behind a global ID of type `expected`, or NOT_FOUND (as for a missing ID)."""
    try:
        type_name, key = parse_id(gid)
    except NotFound:
        raise NotFound(expected) from None
    if type_name != expected or not isinstance(key, uuid.UUID):
        raise NotFound(expected)
    return key


def decode_optional(gid: str | None, expected: str) -> uuid.UUID | None:
    return None if gid is None else decode_id(gid, expected)


def split_id(gid: object) -> tuple[str, str]:
    """(type, key as written) of a well-formed global ID, or NOT_FOUND."""
    type_name, key = parse_id(gid)
    return type_name, str(key)


def event_id(family_id: uuid.UUID, seq: int) -> str:
    """An Event's global ID: its family and its seq (seqs count per family)."""
    return encode_id("Event", f"{family_id}:{seq}")

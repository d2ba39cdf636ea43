"""Input validation (pydantic) mapped to BAD_USER_INPUT with per-field messages."""

from __future__ import annotations

import ipaddress
import re
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import email_validator
import idna
import pycountry
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from giftgraph.db.models import CommentTarget, ListKind, OccasionKind, Role
from giftgraph.errors import BadInput

M = TypeVar("M", bound=BaseModel)


def _not_future(v: date | None) -> date | None:
    if v is not None and v > date.today():
        raise ValueError("cannot be in the future")
    return v


def _list_or_empty(v: Any) -> Any:
    return [] if v is None else v


def _none_if_blank(v: str | None) -> str | None:
    return v if v else None


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ShortText = Annotated[
    str | None,
    StringConstraints(strip_whitespace=True, max_length=100),
    AfterValidator(_none_if_blank),
]
LongText = Annotated[
    str | None,
    StringConstraints(strip_whitespace=True, max_length=5000),
    AfterValidator(_none_if_blank),
]
def _money(d: Decimal) -> Decimal:
    """As stored (NUMERIC(12, 2)); -0 passes ge=0 but is 0 (PostgreSQL has no -0)."""
    d = d.quantize(Decimal("0.01"))
    return d.copy_abs() if d.is_zero() else d


Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2), AfterValidator(_money)]
def normalized_email(v: str) -> str | None:
    """The address in ASCII (the domain in its IDNA form), or None when it is none. An
    ASCII local part keeps Unicode lookalikes out (`alice` spelt with a Cyrillic a), and
    PostgreSQL's and Python's lower() agree on it (the unique index is on lower(email))."""
    try:
        return email_validator.validate_email(v.strip(), check_deliverability=False,
                                              allow_smtputf8=False).ascii_email
    except email_validator.EmailNotValidError:
        return None


def _email(v: str) -> str:
    email = normalized_email(v)
    if email is None:
        raise ValueError("must be an email address (ASCII before the @-sign)")
    return email


Email = Annotated[str, StringConstraints(max_length=320), AfterValidator(_email)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Interest = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


# A DNS label in its ASCII (IDNA) form: letters, digits, inner hyphens, 1-63 characters.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _valid_host(host: str) -> bool:
    """An IP address or a host name (IDNA: Unicode names are taken in their ASCII form)."""
    if host.startswith("["):  # urlsplit keeps the brackets off `hostname`, not `netloc`
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    try:
        ascii_host = idna.encode(host.removesuffix("."), uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return False
    labels = ascii_host.split(".")
    return len(ascii_host) <= 253 and all(_LABEL.fullmatch(label) for label in labels) \
        and not labels[-1].isdigit()  # "1.2.3.999" is no address and no name


def _http_url(v: str | None) -> str | None:
    if v is None or v == "":
        return None
    if any(c.isspace() or not c.isprintable() for c in v):
        raise ValueError("must be an http(s) URL without spaces or control characters")
    try:
        parts = urlsplit(v)
        host, _port = parts.hostname, parts.port  # .port raises for a port that is none
    except ValueError as exc:
        raise ValueError("must be an http(s) URL with a valid host") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("must be an http(s) URL with a host")
    if not _valid_host(host):
        raise ValueError("must be an http(s) URL with a valid host name or IP address")
    return v


HttpUrl = Annotated[
    str | None,
    StringConstraints(strip_whitespace=True, max_length=2048),
    AfterValidator(_http_url),
]


def _currency(v: str) -> str:
    code = v.upper()  # ASCII only: str.upper() makes "INR" of a dotless "\u0131nr"
    if len(code) != 3 or not v.isascii() or pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError("must be an ISO 4217 currency code such as USD")
    return code


Currency = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_currency)]


def store_from_url(url: str | None) -> str | None:
    """The store a gift comes from: the URL's host without a leading `www.`."""
    if not url:
        return None
    host = (urlsplit(url).hostname or "").lower()
    return host.removeprefix("www.") or None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignUpData(_Model):
    family_name: Name
    email: Email
    password: Password
    display_name: DisplayName
    currency: Currency = "USD"


class FamilyData(_Model):
    name: Name
    currency: Currency


class UserData(_Model):
    email: Email
    password: Password
    display_name: DisplayName
    role: Role = Role.MEMBER


class UserPatchData(_Model):
    email: Email
    display_name: DisplayName
    role: Role
    is_active: bool
    password: Password | None = None


class PasswordData(_Model):
    password: Password


class PersonData(_Model):
    name: Name
    relationship: ShortText = None
    birthday: Annotated[date | None, AfterValidator(_not_future)] = None
    interests: Annotated[list[Interest], Field(max_length=50), BeforeValidator(_list_or_empty)] = []
    notes: LongText = None


class OccasionData(_Model):
    name: Name
    kind: OccasionKind
    date: date
    description: LongText = None
    budget: Money | None = None


class GiftListData(_Model):
    name: Name
    kind: ListKind
    person_id: Any = None
    occasion_id: Any = None
    budget: Money | None = None


class GiftData(_Model):
    name: Name
    url: HttpUrl = None
    price: Money | None = None
    currency: Currency  # none given: the family's (resolvers/gifts.py)
    image_url: HttpUrl = None
    description: LongText = None


class ListItemData(_Model):
    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1
    notes: LongText = None


class CommentData(_Model):
    target: CommentTarget
    body: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _wording(err: Any) -> str:
    """A field's problem in the words of the other messages here ("must be ..."), not
    pydantic's ("String should have at least 8 characters"); pydantic's for the rest."""
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "string_too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"must be at least {least} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind in ("too_short", "too_long"):
        bound = ctx.get("min_length" if kind == "too_short" else "max_length")
        return f"must have at {'least' if kind == 'too_short' else 'most'} {bound} items"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        word = {"greater_than_equal": "at least", "less_than_equal": "at most",
                "greater_than": "more than", "less_than": "less than"}[kind]
        bound = next(iter(ctx.values()), None)
        return f"must be {word} {bound}"
    if kind == "missing":
        return "is required"
    return str(err["msg"]).removeprefix("Value error, ")


def validate(model: type[M], data: dict[str, Any], prefix: str = "") -> M:
    """Validate `data` (snake_case keys) or raise BAD_USER_INPUT naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields: dict[str, str] = {}
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
            msg = _wording(err)
            key = (prefix + ".".join(_camel(p) for p in loc) if loc
                   else prefix.rstrip(".") or "input")
            fields.setdefault(key, msg)
        raise BadInput(fields) from exc

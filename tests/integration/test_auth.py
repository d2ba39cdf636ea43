"""Authentication and user management: tokens, rotation, logout, roles, last-ADMIN rules."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from giftgraph import auth
from giftgraph.ids import decode_id
from tests.conftest import GQL, SIGN_UP, Account, GQLResult, _dsn, sign_up

SECRET = "test-secret-that-is-long-enough-0123456789"  # make_settings' jwt_secret

ME = "{ me { id email role isActive } }"
LOGIN = """
mutation($email: String!, $password: String!) {
  login(email: $email, password: $password) {
    accessToken refreshToken expiresIn user { id email role } }
}"""
REFRESH = """
mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken user { id } } }"""
LOGOUT = "mutation($t: String!) { logout(refreshToken: $t) }"
REGISTER = """
mutation($input: RegisterUserInput!) { registerUser(input: $input) { id email role isActive } }"""
UPDATE_USER = """
mutation($id: ID!, $input: UpdateUserInput!) {
  updateUser(id: $id, input: $input) { id displayName role isActive }
}"""
DELETE_USER = "mutation($id: ID!) { deleteUser(id: $id) }"
MEMBER_PASSWORD = "member password 1"


async def login(gql: GQL, email: str, password: str) -> GQLResult:
    return await gql(LOGIN, {"email": email, "password": password})


async def register(admin: Account, role: str = "MEMBER",
                   password: str = MEMBER_PASSWORD) -> Account:
    """A new user of the admin's family, logged in."""
    email = f"member-{uuid.uuid4().hex[:8]}@example.com"
    r = await admin.client(REGISTER, {"input": {"email": email, "password": password,
                                                "displayName": "Member", "role": role}})
    user = r.data["registerUser"]
    assert user["role"] == role
    payload = (await login(admin.client.as_(None), email, password)).data["login"]
    assert payload["user"]["id"] == user["id"]
    return Account(admin.client.as_(payload["accessToken"]), payload["accessToken"],
                   payload["refreshToken"], user["id"], email, password)


def assert_unauthenticated(r: GQLResult) -> None:
    assert r.codes == ["UNAUTHENTICATED"], r.body
    assert r.body.get("data") is None, r.body


# --- signUp and login ----------------------------------------------------------------------

async def test_sign_up_creates_family_and_admin(gql: GQL) -> None:
    r = await gql(SIGN_UP, {"input": {"familyName": "The Smiths", "email": "Jo@Example.com",
                                      "password": "correct horse battery",
                                      "displayName": "Jo"}})
    payload = r.data["signUp"]
    assert payload["user"]["role"] == "ADMIN"
    assert payload["expiresIn"] > 0
    assert payload["accessToken"]
    assert payload["refreshToken"]
    me = (await gql.as_(payload["accessToken"])(
        "{ me { id role displayName isActive family { name } } family { name } }")).data
    assert me["me"] == {"id": payload["user"]["id"], "role": "ADMIN", "displayName": "Jo",
                        "isActive": True, "family": {"name": "The Smiths"}}
    assert me["family"] == {"name": "The Smiths"}


async def test_sign_up_duplicate_email_is_conflict_case_insensitive(
    gql: GQL, alice: Account
) -> None:
    r = await gql(SIGN_UP, {"input": {"familyName": "Again", "email": alice.email.upper(),
                                      "password": "another password", "displayName": "X"}})
    assert r.codes == ["CONFLICT"], r.body
    assert r.errors[0]["extensions"]["fields"]["email"]
    assert r.body.get("data") is None
    # Nothing was created: the original account still logs in and is alone in its family.
    assert (await login(gql, alice.email, alice.password)).data["login"]["user"]["id"] == (
        alice.user_id)
    assert (await alice.client("{ users { totalCount } }")).data["users"]["totalCount"] == 1


async def test_sign_up_bad_fields_are_named_in_plain_words(gql: GQL) -> None:
    """Each bad field is named with what it must be (the words of every other check), not
    the validator's ("String should have at least 8 characters"); nothing is created."""
    r = await gql(SIGN_UP, {"input": {"familyName": "  ", "email": "short@example.com",
                                      "password": "seven77", "displayName": "x" * 101}})
    assert r.codes == ["BAD_USER_INPUT"], r.body
    assert r.errors[0]["extensions"]["fields"] == {
        "familyName": "must not be empty", "password": "must be at least 8 characters",
        "displayName": "must be at most 100 characters"}
    assert (await gql(SIGN_UP, {"input": {"familyName": "F", "email": "short@example.com",
                                          "password": "eight888", "displayName": "S"}})
            ).codes == []


async def test_register_user_duplicate_email_is_conflict(alice: Account,
                                                         mallory: Account) -> None:
    r = await alice.client(REGISTER, {"input": {"email": mallory.email.upper(),
                                                "password": "some password",
                                                "displayName": "Dup"}})
    assert r.codes == ["CONFLICT"], r.body
    assert r.errors[0]["extensions"]["fields"]["email"]


async def test_login_with_right_password(gql: GQL, alice: Account) -> None:
    payload = (await login(gql, alice.email, alice.password)).data["login"]
    assert payload["user"] == {"id": alice.user_id, "email": alice.email, "role": "ADMIN"}
    me = (await gql.as_(payload["accessToken"])(ME)).data["me"]
    assert me["id"] == alice.user_id
    assert payload["refreshToken"] != alice.refresh


async def test_login_email_is_case_insensitive(gql: GQL, alice: Account) -> None:
    payload = (await login(gql, alice.email.upper(), alice.password)).data["login"]
    assert payload["user"]["id"] == alice.user_id


async def test_login_wrong_password_and_unknown_email_look_the_same(
    gql: GQL, alice: Account
) -> None:
    wrong = await login(gql, alice.email, "not the password")
    unknown = await login(gql, "nobody-here@example.com", alice.password)
    assert_unauthenticated(wrong)
    assert_unauthenticated(unknown)
    assert wrong.errors[0]["message"] == unknown.errors[0]["message"]
    assert wrong.status == unknown.status


# --- access token rejection ----------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _fresh(claims: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time())
    return {**claims, "iat": now, "exp": now + 600}


def _alg_none(a: Account) -> str:
    return "Bearer " + jwt.encode(_fresh(_claims(a.token)), None, algorithm="none")


def _alg_none_by_hand(a: Account) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = _b64(json.dumps(_fresh(_claims(a.token))).encode())
    return f"Bearer {header}.{body}."


def _wrong_key(a: Account) -> str:
    return "Bearer " + jwt.encode(_fresh(_claims(a.token)), "another-secret-" + "x" * 32,
                                  algorithm="HS256")


def _expired(a: Account) -> str:
    now = int(time.time())
    claims = {**_claims(a.token), "iat": now - 3600, "exp": now - 60}
    return "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")


def _refresh_as_access(a: Account) -> str:
    return f"Bearer {a.refresh}"


def _refresh_claims_re_signed(a: Account) -> str:
    """A correctly signed token whose type is `refresh`: still not an access token."""
    return "Bearer " + jwt.encode(_fresh({**_claims(a.token), "typ": "refresh"}), SECRET,
                                  algorithm="HS256")


def _tampered(a: Account) -> str:
    header, body, signature = a.token.split(".")
    claims = json.loads(_unb64(body))
    claims["exp"] = int(claims["exp"]) + 10 * 365 * 24 * 3600
    return f"Bearer {header}.{_b64(json.dumps(claims).encode())}.{signature}"


def _tampered_user(a: Account) -> str:
    header, body, signature = a.token.split(".")
    claims = json.loads(_unb64(body))
    claims["sub"] = str(uuid.uuid4())
    return f"Bearer {header}.{_b64(json.dumps(claims).encode())}.{signature}"


def _no_exp(a: Account) -> str:
    claims = {k: v for k, v in _claims(a.token).items() if k != "exp"}
    return "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")


def _no_stamp(a: Account) -> str:
    """Signed with the right key, but without the password stamp (`pst`)."""
    claims = {k: v for k, v in _claims(a.token).items() if k != "pst"}
    return "Bearer " + jwt.encode(_fresh(claims), SECRET, algorithm="HS256")


def _stamp_of_another_password(a: Account) -> str:
    claims = {**_claims(a.token), "pst": "AAAAAAAAAAAAAAAA"}
    return "Bearer " + jwt.encode(_fresh(claims), SECRET, algorithm="HS256")


def _another_epoch(a: Account) -> str:
    """Signed with the right key, but of another `token_epoch` than its user's."""
    claims = {**_claims(a.token), "tep": 7}
    return "Bearer " + jwt.encode(_fresh(claims), SECRET, algorithm="HS256")


def _garbage(_: Account) -> str:
    return "Bearer not-a-jwt"


def _basic(a: Account) -> str:
    return "Basic " + base64.b64encode(f"{a.email}:{a.password}".encode()).decode()


def _bare_token(a: Account) -> str:
    return a.token


def _bearer_without_token(_: Account) -> str:
    return "Bearer "


BAD_AUTHORIZATION: dict[str, Callable[[Account], str]] = {
    "alg-none": _alg_none,
    "alg-none-by-hand": _alg_none_by_hand,
    "wrong-key": _wrong_key,
    "expired": _expired,
    "refresh-token-as-access": _refresh_as_access,
    "refresh-type-re-signed": _refresh_claims_re_signed,
    "tampered-exp": _tampered,
    "tampered-sub": _tampered_user,
    "missing-exp": _no_exp,
    "missing-password-stamp": _no_stamp,
    "stamp-of-another-password": _stamp_of_another_password,
    "another-token-epoch": _another_epoch,
    "garbage": _garbage,
    "basic-scheme": _basic,
    "no-scheme": _bare_token,
    "bearer-without-token": _bearer_without_token,
}


async def _me_with(http: httpx.AsyncClient, authorization: str | None) -> GQLResult:
    headers = {"Authorization": authorization} if authorization is not None else {}
    r = await http.post("/graphql", json={"query": ME}, headers=headers)
    return GQLResult(r.status_code, r.json())


async def test_missing_token_is_unauthenticated(http: httpx.AsyncClient) -> None:
    assert_unauthenticated(await _me_with(http, None))


async def test_valid_token_and_re_signed_claims_are_accepted(
    http: httpx.AsyncClient, alice: Account
) -> None:
    """Control: the crafted tokens below differ from a valid one only in what they break."""
    assert (await _me_with(http, f"Bearer {alice.token}")).data["me"]["id"] == alice.user_id
    resigned = jwt.encode(_fresh(_claims(alice.token)), SECRET, algorithm="HS256")
    assert (await _me_with(http, f"Bearer {resigned}")).data["me"]["id"] == alice.user_id
    assert (await _me_with(http, f"bearer {alice.token}")).data["me"]["id"] == alice.user_id


@pytest.mark.parametrize("name", list(BAD_AUTHORIZATION))
async def test_bad_access_token_is_rejected(
    http: httpx.AsyncClient, alice: Account, name: str
) -> None:
    authorization = BAD_AUTHORIZATION[name](alice)
    assert_unauthenticated(await _me_with(http, authorization))
    # A mutation is refused too, and nothing is written.
    r = await http.post("/graphql", headers={"Authorization": authorization}, json={
        "query": 'mutation { createPerson(input: {name: "Intruder"}) { id } }'})
    assert_unauthenticated(GQLResult(r.status_code, r.json()))
    persons = (await alice.client("{ persons { totalCount } }")).data["persons"]
    assert persons["totalCount"] == 0


async def test_a_token_that_was_accepted_is_refused_once_it_expires(
    http: httpx.AsyncClient, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signature of a token is verified once per process (decode_access_token): every
    later use still checks its expiry, as PyJWT does (`exp <= now` is expired)."""
    expires = int(time.time()) + 600
    token = jwt.encode({**_claims(alice.token), "iat": expires - 700, "exp": expires}, SECRET,
                       algorithm="HS256")
    verified: list[str] = []
    decode = jwt.decode

    def counting(raw: str, *args: Any, **kwargs: Any) -> Any:
        verified.append(raw)
        return decode(raw, *args, **kwargs)

    monkeypatch.setattr(auth.jwt, "decode", counting)
    for _ in range(2):
        assert (await _me_with(http, f"Bearer {token}")).data["me"]["id"] == alice.user_id
    assert verified.count(token) == 1  # the second use: the remembered verification
    monkeypatch.setattr(auth, "time", SimpleNamespace(time=lambda: float(expires)))
    result = await _me_with(http, f"Bearer {token}")
    assert_unauthenticated(result)
    assert result.body["errors"][0]["message"] == "Token has expired"
    assert verified.count(token) == 1


async def test_tampered_role_does_not_grant_admin(alice: Account) -> None:
    member = await register(alice)
    header, body, signature = member.token.split(".")
    claims = json.loads(_unb64(body))
    claims["role"] = "ADMIN"
    forged = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    r = await member.client.as_(forged)(REGISTER, {"input": {
        "email": "x-" + member.email, "password": "whatever123", "displayName": "X"}})
    assert_unauthenticated(r)


async def test_access_token_is_not_a_refresh_token(gql: GQL, alice: Account) -> None:
    assert_unauthenticated(await gql(REFRESH, {"t": alice.token}))


# --- refresh rotation and logout -----------------------------------------------------------

async def test_refresh_rotates_and_reuse_revokes_the_chain(gql: GQL, alice: Account) -> None:
    first = (await gql(REFRESH, {"t": alice.refresh})).data["refreshToken"]
    assert first["refreshToken"] != alice.refresh
    assert first["user"] == {"id": alice.user_id}
    me = (await gql.as_(first["accessToken"])(ME)).data["me"]
    assert me["id"] == alice.user_id
    second = (await gql(REFRESH, {"t": first["refreshToken"]})).data["refreshToken"]
    assert second["refreshToken"] not in (alice.refresh, first["refreshToken"])

    # The original (already rotated) token is presented again: theft is assumed.
    assert_unauthenticated(await gql(REFRESH, {"t": alice.refresh}))
    # ...and every token of its chain is revoked, including the newest one.
    assert_unauthenticated(await gql(REFRESH, {"t": second["refreshToken"]}))
    # A fresh login starts a new, working chain.
    payload = (await login(gql, alice.email, alice.password)).data["login"]
    assert (await gql(REFRESH, {"t": payload["refreshToken"]})).data["refreshToken"]


async def test_refresh_token_cannot_be_used_twice(gql: GQL, alice: Account) -> None:
    assert (await gql(REFRESH, {"t": alice.refresh})).data["refreshToken"]
    assert_unauthenticated(await gql(REFRESH, {"t": alice.refresh}))


@pytest.mark.parametrize("token", ["garbage", "", "a.b.c"])
async def test_refresh_with_invalid_token(gql: GQL, token: str) -> None:
    assert_unauthenticated(await gql(REFRESH, {"t": token}))


async def test_refresh_with_forged_refresh_token(gql: GQL, alice: Account) -> None:
    """A correctly signed refresh JWT that the server never issued (not stored) is refused."""
    claims = _claims(alice.refresh)
    forged = jwt.encode(_fresh({**claims, "jti": "forged-" + uuid.uuid4().hex}), SECRET,
                        algorithm="HS256")
    assert_unauthenticated(await gql(REFRESH, {"t": forged}))


async def test_logout_revokes_the_refresh_token(gql: GQL, alice: Account) -> None:
    assert (await gql(LOGOUT, {"t": alice.refresh})).data["logout"] is True
    assert_unauthenticated(await gql(REFRESH, {"t": alice.refresh}))


async def test_logout_revokes_rotated_descendants(gql: GQL, alice: Account) -> None:
    rotated = (await gql(REFRESH, {"t": alice.refresh})).data["refreshToken"]["refreshToken"]
    assert (await gql(LOGOUT, {"t": rotated})).data["logout"] is True
    assert_unauthenticated(await gql(REFRESH, {"t": rotated}))


async def test_logout_unknown_token_is_false(gql: GQL, alice: Account) -> None:
    assert (await gql(LOGOUT, {"t": "not-a-token"})).data["logout"] is False
    unknown = jwt.encode(_fresh({**_claims(alice.refresh), "jti": uuid.uuid4().hex}), SECRET,
                         algorithm="HS256")
    assert (await gql(LOGOUT, {"t": unknown})).data["logout"] is False
    # Alice's real session is untouched by those.
    assert (await gql(REFRESH, {"t": alice.refresh})).data["refreshToken"]


async def test_logout_does_not_touch_other_sessions(gql: GQL, alice: Account) -> None:
    other = (await login(gql, alice.email, alice.password)).data["login"]["refreshToken"]
    assert (await gql(LOGOUT, {"t": alice.refresh})).data["logout"] is True
    assert (await gql(REFRESH, {"t": other})).data["refreshToken"]


# --- members and roles ---------------------------------------------------------------------

async def test_admin_registers_member_who_can_log_in(alice: Account) -> None:
    member = await register(alice)
    me = (await member.client("{ me { id role isActive } family { id } }")).data
    assert me["me"] == {"id": member.user_id, "role": "MEMBER", "isActive": True}
    alice_family = (await alice.client("{ family { id } }")).data["family"]["id"]
    assert me["family"]["id"] == alice_family
    users = (await alice.client("{ users { totalCount edges { node { id } } } }")).data["users"]
    assert {e["node"]["id"] for e in users["edges"]} == {alice.user_id, member.user_id}


async def test_register_user_is_admin_only(alice: Account) -> None:
    member = await register(alice)
    r = await member.client(REGISTER, {"input": {"email": "sneaky@example.com",
                                                 "password": "sneaky password",
                                                 "displayName": "Sneaky"}})
    assert r.codes == ["FORBIDDEN"], r.body
    assert r.body.get("data") is None
    anonymous = await alice.client.as_(None)(REGISTER, {"input": {
        "email": "anon@example.com", "password": "anon password", "displayName": "Anon"}})
    assert_unauthenticated(anonymous)
    users = (await alice.client("{ users { totalCount } }")).data["users"]
    assert users["totalCount"] == 2
    assert_unauthenticated(await login(alice.client.as_(None), "sneaky@example.com",
                                       "sneaky password"))


async def test_member_can_change_own_display_name(alice: Account) -> None:
    member = await register(alice)
    r = await member.client(UPDATE_USER, {"id": member.user_id,
                                          "input": {"displayName": "New name"}})
    assert r.data["updateUser"] == {"id": member.user_id, "displayName": "New name",
                                    "role": "MEMBER", "isActive": True}


async def test_member_cannot_change_another_user(alice: Account) -> None:
    member = await register(alice)
    r = await member.client(UPDATE_USER, {"id": alice.user_id,
                                          "input": {"displayName": "Hacked"}})
    assert r.codes == ["FORBIDDEN"], r.body
    assert r.body.get("data") is None
    me = (await alice.client("{ me { displayName } }")).data["me"]
    assert me["displayName"] == "Admin"


async def test_member_cannot_change_own_role(alice: Account) -> None:
    member = await register(alice)
    r = await member.client(UPDATE_USER, {"id": member.user_id, "input": {"role": "ADMIN"}})
    assert r.codes == ["FORBIDDEN"], r.body
    assert (await member.client(ME)).data["me"]["role"] == "MEMBER"


async def test_member_cannot_delete_users(alice: Account) -> None:
    member = await register(alice)
    other = await register(alice)
    r = await member.client(DELETE_USER, {"id": other.user_id})
    assert r.codes == ["FORBIDDEN"], r.body
    assert (await other.client(ME)).data["me"]["id"] == other.user_id


# --- the last ADMIN ------------------------------------------------------------------------

@pytest.mark.parametrize("patch", [{"role": "MEMBER"}, {"isActive": False}],
                         ids=["demote", "deactivate"])
async def test_last_admin_cannot_be_demoted_or_deactivated(
    alice: Account, patch: dict[str, Any]
) -> None:
    await register(alice)  # a member does not count as an ADMIN
    r = await alice.client(UPDATE_USER, {"id": alice.user_id, "input": patch})
    assert r.codes == ["CONFLICT"], r.body
    assert r.body.get("data") is None
    assert (await alice.client(ME)).data["me"] == {
        "id": alice.user_id, "email": alice.email, "role": "ADMIN", "isActive": True}


async def test_last_admin_cannot_delete_itself(alice: Account) -> None:
    await register(alice)
    r = await alice.client(DELETE_USER, {"id": alice.user_id})
    assert r.codes == ["CONFLICT"], r.body
    assert r.body.get("data") is None
    assert (await alice.client(ME)).data["me"]["id"] == alice.user_id


async def test_admin_can_step_down_when_another_admin_exists(alice: Account) -> None:
    """Control for the last-ADMIN rule: with a second ADMIN, demotion is allowed."""
    second = await register(alice, role="ADMIN")
    r = await alice.client(UPDATE_USER, {"id": alice.user_id, "input": {"role": "MEMBER"}})
    assert r.data["updateUser"]["role"] == "MEMBER"
    # Now `second` is the last ADMIN and is protected in turn.
    r = await second.client(UPDATE_USER, {"id": second.user_id, "input": {"role": "MEMBER"}})
    assert r.codes == ["CONFLICT"], r.body


# --- deactivation, deletion, password change -----------------------------------------------

async def test_deactivated_member_loses_access(gql: GQL, alice: Account) -> None:
    member = await register(alice)
    assert (await member.client(ME)).data["me"]["id"] == member.user_id
    r = await alice.client(UPDATE_USER, {"id": member.user_id, "input": {"isActive": False}})
    assert r.data["updateUser"]["isActive"] is False
    assert_unauthenticated(await member.client(ME))
    assert_unauthenticated(await login(gql, member.email, member.password))
    assert_unauthenticated(await gql(REFRESH, {"t": member.refresh}))


async def test_delete_user_transfers_lists_and_kills_tokens(gql: GQL, alice: Account) -> None:
    member = await register(alice)
    gift_list = (await member.client(
        'mutation { createList(input: {name: "Member ideas", kind: IDEAS}) { id owner { id } } }'
    )).data["createList"]
    assert gift_list["owner"] == {"id": member.user_id}

    r = await alice.client(DELETE_USER, {"id": member.user_id})
    assert r.data["deleteUser"] == member.user_id

    assert_unauthenticated(await member.client(ME))
    assert_unauthenticated(await login(gql, member.email, member.password))
    assert_unauthenticated(await gql(REFRESH, {"t": member.refresh}))
    node = (await alice.client(
        "query($id: ID!) { node(id: $id) { ... on GiftList { id name owner { id } } } }",
        {"id": gift_list["id"]})).data["node"]
    assert node == {"id": gift_list["id"], "name": "Member ideas",
                    "owner": {"id": alice.user_id}}
    users = (await alice.client("{ users { totalCount edges { node { id } } } }")).data["users"]
    assert users["edges"] == [{"node": {"id": alice.user_id}}]
    gone = await alice.client("query($id: ID!) { node(id: $id) { id } }",
                              {"id": member.user_id})
    assert gone.codes == ["NOT_FOUND"]


async def test_deleted_author_comment_keeps_body_with_null_author(alice: Account) -> None:
    member = await register(alice)
    person = (await alice.client('mutation { createPerson(input: {name: "Gran"}) { id } }')
              ).data["createPerson"]["id"]
    await member.client("mutation($t: ID!) { addComment(input: {target: PERSON, targetId: $t,"
                        ' body: "She likes tea"}) { id } }', {"t": person})
    assert (await alice.client(DELETE_USER, {"id": member.user_id})).data["deleteUser"]
    comments = (await alice.client(
        "query($t: ID!) { comments(target: PERSON, targetId: $t) { edges { node {"
        " body author { id } } } } }", {"t": person})).data["comments"]["edges"]
    assert comments == [{"node": {"body": "She likes tea", "author": None}}]


async def test_password_change_revokes_refresh_tokens(gql: GQL, alice: Account) -> None:
    member = await register(alice)
    other_session = (await login(gql, member.email, member.password)).data["login"]
    r = await member.client(UPDATE_USER, {"id": member.user_id, "input": {
        "password": "brand new password", "currentPassword": member.password}})
    assert r.data["updateUser"]["id"] == member.user_id
    assert_unauthenticated(await gql(REFRESH, {"t": member.refresh}))
    assert_unauthenticated(await gql(REFRESH, {"t": other_session["refreshToken"]}))
    assert_unauthenticated(await login(gql, member.email, member.password))
    fresh = (await login(gql, member.email, "brand new password")).data["login"]
    assert (await gql(REFRESH, {"t": fresh["refreshToken"]})).data["refreshToken"]


async def test_admin_password_reset_of_member_revokes_its_refresh_tokens(
    gql: GQL, alice: Account
) -> None:
    member = await register(alice)
    r = await alice.client(UPDATE_USER, {"id": member.user_id,
                                         "input": {"password": "reset by admin"}})
    assert r.data["updateUser"]["id"] == member.user_id
    assert_unauthenticated(await gql(REFRESH, {"t": member.refresh}))
    assert (await login(gql, member.email, "reset by admin")).data["login"]


@pytest.mark.parametrize("by", ["self", "admin"])
async def test_password_change_ends_earlier_access_tokens_at_once(
    gql: GQL, alice: Account, by: str
) -> None:
    """An access token issued before a password change is refused on its next request
    (not when it expires); one issued after works; other profile changes end nothing."""
    member = await register(alice)
    other_session = (await login(gql, member.email, member.password)).data["login"]
    r = await member.client(UPDATE_USER, {"id": member.user_id,
                                          "input": {"displayName": "Renamed"}})
    assert r.data["updateUser"]["displayName"] == "Renamed"
    assert (await member.client(ME)).data["me"]["id"] == member.user_id
    changer = member.client if by == "self" else alice.client
    change = {"password": "new pass 42"}
    if by == "self":
        change["currentPassword"] = member.password
    r = await changer(UPDATE_USER, {"id": member.user_id, "input": change})
    assert r.data["updateUser"]["id"] == member.user_id
    assert_unauthenticated(await member.client(ME))
    assert_unauthenticated(await member.client.as_(other_session["accessToken"])(ME))
    assert (await alice.client(ME)).data["me"]["id"] == alice.user_id  # others unaffected
    fresh = (await login(gql, member.email, "new pass 42")).data["login"]
    assert (await member.client.as_(fresh["accessToken"])(ME)).data["me"]["id"] == \
        member.user_id


async def test_sign_up_accounts_are_independent(gql: GQL) -> None:
    """Two sign-ups make two families, each with its own ADMIN."""
    a = await sign_up(gql, "One")
    b = await sign_up(gql, "Two")
    fa = (await a.client("{ family { id } }")).data["family"]["id"]
    fb = (await b.client("{ family { id } }")).data["family"]["id"]
    assert fa != fb


async def test_a_request_authenticates_in_one_statement_without_the_password_hash(
        app: Any, alice: Account) -> None:
    """The caller is read as plain columns (a `Caller`), with the family's version, in one
    statement, and the password hash is not among them (only its MD5)."""
    from tests.integration.test_no_n_plus_one import count_statements

    with count_statements(app) as statements:
        r = await alice.client("{ me { id email displayName role } }")
    assert r.data["me"]["email"] == alice.email
    assert r.data["me"]["role"] == "ADMIN"
    first = statements[0]  # authentication comes before anything executes
    assert "FROM users" in first
    assert "max(events.seq)" in first
    # Only its MD5, for the token's password stamp, not the hash itself.
    assert first.count("password_hash") == 1
    assert "md5(users.password_hash)" in first
    assert not any("max(events.seq)" in s for s in statements[1:]), statements


# --- token epoch: reactivation revives nothing ---------------------------------------------

async def _refresh_rows(database_url: str, sql: str, *args: Any) -> None:
    """Change refresh_tokens rows directly: the state a race would leave behind."""
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_reactivation_revives_no_token_issued_before_the_deactivation(
        gql: GQL, alice: Account) -> None:
    member = await register(alice)
    for active in (False, True):
        r = await alice.client(UPDATE_USER, {"id": member.user_id,
                                             "input": {"isActive": active}})
        assert r.data["updateUser"]["isActive"] is active
    assert_unauthenticated(await member.client(ME))
    assert_unauthenticated(await gql(REFRESH, {"t": member.refresh}))
    fresh = (await login(gql, member.email, member.password)).data["login"]
    assert (await gql.as_(fresh["accessToken"])(ME)).data["me"]["id"] == member.user_id
    assert (await gql(REFRESH, {"t": fresh["refreshToken"]})).data["refreshToken"]


async def test_a_refresh_token_that_escaped_the_deactivation_ends_with_it(
        gql: GQL, alice: Account, database_url: str) -> None:
    """A refresh that commits while the member is being deactivated issues a token whose
    row the revocation does not see (its statement's snapshot is older). It carries the
    epoch from before, and is refused after the reactivation."""
    member = await register(alice)
    for active in (False, True):
        await alice.client(UPDATE_USER, {"id": member.user_id, "input": {"isActive": active}})
    await _refresh_rows(database_url, "UPDATE refresh_tokens SET revoked_at = NULL"
                        " WHERE user_id = $1", decode_id(member.user_id, "User"))
    assert_unauthenticated(await gql(REFRESH, {"t": member.refresh}))


# --- the refresh chain of an access token (`sid`) ----------------------------------------

async def test_logout_ends_the_access_tokens_of_its_chain_only(gql: GQL, alice: Account) -> None:
    other = (await login(gql, alice.email, alice.password)).data["login"]
    rotated = (await gql(REFRESH, {"t": alice.refresh})).data["refreshToken"]
    assert (await gql(LOGOUT, {"t": rotated["refreshToken"]})).data["logout"] is True
    assert_unauthenticated(await alice.client(ME))  # issued with the chain's first token
    assert_unauthenticated(await gql.as_(rotated["accessToken"])(ME))
    assert (await gql.as_(other["accessToken"])(ME)).data["me"]["id"] == alice.user_id


async def test_reuse_detection_ends_the_access_tokens_of_the_chain(
        gql: GQL, alice: Account) -> None:
    rotated = (await gql(REFRESH, {"t": alice.refresh})).data["refreshToken"]
    assert (await gql.as_(rotated["accessToken"])(ME)).data["me"]["id"] == alice.user_id
    assert_unauthenticated(await gql(REFRESH, {"t": alice.refresh}))  # stolen and replayed
    assert_unauthenticated(await gql.as_(rotated["accessToken"])(ME))


async def test_a_refresh_token_that_escaped_the_logout_ends_with_its_chain(
        gql: GQL, alice: Account, database_url: str) -> None:
    """A refresh that commits while `logout` revokes its chain leaves a new row unrevoked
    (the revocation's snapshot is older): it is refused, its chain being revoked."""
    rotated = (await gql(REFRESH, {"t": alice.refresh})).data["refreshToken"]
    assert (await gql(LOGOUT, {"t": alice.refresh})).data["logout"] is True
    await _refresh_rows(database_url, "UPDATE refresh_tokens SET revoked_at = NULL"
                        " WHERE id <> chain_id")
    assert_unauthenticated(await gql(REFRESH, {"t": rotated["refreshToken"]}))


# --- currentPassword -----------------------------------------------------------------------

@pytest.mark.parametrize("current", [None, "not my password"], ids=["missing", "wrong"])
@pytest.mark.parametrize("who", ["member", "admin"])
async def test_changing_ones_own_password_needs_the_current_one(
        gql: GQL, alice: Account, who: str, current: str | None) -> None:
    account = await register(alice) if who == "member" else alice
    change: dict[str, Any] = {"password": "taken over 123"}
    if current is not None:
        change["currentPassword"] = current
    r = await account.client(UPDATE_USER, {"id": account.user_id, "input": change})
    assert r.codes == ["BAD_USER_INPUT"], r.body
    assert set(r.errors[0]["extensions"]["fields"]) == {"currentPassword"}
    assert r.body.get("data") is None
    assert (await account.client(ME)).data["me"]["id"] == account.user_id  # nothing ended
    assert_unauthenticated(await login(gql, account.email, "taken over 123"))
    assert (await login(gql, account.email, account.password)).data["login"]
    change["currentPassword"] = account.password
    r = await account.client(UPDATE_USER, {"id": account.user_id, "input": change})
    assert r.data["updateUser"]["id"] == account.user_id
    assert (await login(gql, account.email, "taken over 123")).data["login"]


async def test_a_member_cannot_set_another_members_password_even_knowing_its_own(
        gql: GQL, alice: Account) -> None:
    member, other = await register(alice), await register(alice)
    r = await member.client(UPDATE_USER, {"id": other.user_id, "input": {
        "password": "taken over 123", "currentPassword": member.password}})
    assert r.codes == ["FORBIDDEN"], r.body
    assert (await login(gql, other.email, other.password)).data["login"]

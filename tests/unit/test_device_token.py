"""Device tokens (`AuthPayload.deviceToken`, login's `deviceToken`): a past sign-in of one
user on one device, keyed by the JWT secret, ended by a new `token_epoch` and by age."""

from __future__ import annotations

import time
import uuid

import pytest

from giftgraph import auth
from giftgraph.db import models as m
from tests.conftest import make_settings

SETTINGS = make_settings("postgresql://unused/x", refresh_token_ttl_seconds=3600)


def user(epoch: int = 0) -> m.User:
    return m.User(id=uuid.uuid4(), family_id=uuid.uuid4(), email="a@example.com",
                  display_name="A", role=m.Role.ADMIN, password_hash="x", token_epoch=epoch)


def test_a_token_names_its_device_for_its_user_only() -> None:
    alice, bob = user(), user()
    token = auth.create_device_token(SETTINGS, alice)
    device = auth.device_of(SETTINGS, token, alice)
    assert device is not None
    assert len(device) == 12
    # The same device keeps its id when its token is issued again; a new one gets another.
    again = auth.create_device_token(SETTINGS, alice, device)
    assert auth.device_of(SETTINGS, again, alice) == device
    assert auth.device_of(SETTINGS, auth.create_device_token(SETTINGS, alice), alice) != device
    assert auth.device_of(SETTINGS, token, bob) is None
    assert auth.device_of(SETTINGS, token, None) is None


def test_a_new_epoch_another_secret_or_age_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    alice = user(epoch=3)
    token = auth.create_device_token(SETTINGS, alice)
    alice.token_epoch = 4  # a new password, a deactivation
    assert auth.device_of(SETTINGS, token, alice) is None
    alice.token_epoch = 3
    other = make_settings("postgresql://unused/x",
                          jwt_secret="another-secret-long-enough-0123456789")
    assert auth.device_of(other, token, alice) is None
    assert auth.device_of(SETTINGS, token, alice) is not None
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 3601)
    assert auth.device_of(SETTINGS, token, alice) is None


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],  # the MAC
    lambda t: ("A" if t[0] != "A" else "B") + t[1:],  # the user
    lambda t: t[:-1],  # one character short
    lambda t: t + t,  # too long
    lambda t: "not base64 !!",
    lambda t: "",
])
def test_anything_else_is_no_device(mangle: object) -> None:
    alice = user()
    token = auth.create_device_token(SETTINGS, alice)
    assert auth.device_of(SETTINGS, mangle(token), alice) is None  # type: ignore[operator]

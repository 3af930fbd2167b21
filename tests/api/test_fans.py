"""Fan accounts over HTTP: register, sign in, who am I, sign out."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.api.conftest import PASSWORD, SignedIn, sign_up

PROBLEM = "application/problem+json"


async def test_register_sign_in_and_me(api: AsyncTestClient[Litestar]) -> None:
    fan = await sign_up(api, "Ann@Example.org")
    me = await api.get("/me", headers=fan.headers)
    assert me.status_code == 200
    assert me.json()["email"] == "Ann@Example.org"
    # Any case of the email signs in.
    again = await api.post("/sessions", json={"email": "ann@example.ORG", "password": PASSWORD})
    assert again.status_code == 201


async def test_passwords_are_stored_as_argon2id_and_tokens_only_as_digests(
    api: AsyncTestClient[Litestar], session: AsyncSession, fan_a: SignedIn
) -> None:
    stored = await session.scalar(text("SELECT password_hash FROM fans WHERE id = :f"), {"f": fan_a.fan_id})
    assert str(stored).startswith("$argon2id$")
    assert PASSWORD not in str(stored)
    tokens = (await session.scalars(text("SELECT token_hash FROM fan_sessions"))).all()
    assert fan_a.token not in tokens
    assert all(len(t) == 64 for t in tokens)


async def test_a_sign_in_under_an_idempotency_key_keeps_no_token_to_replay(
    api: AsyncTestClient[Litestar], session: AsyncSession, fan_a: SignedIn
) -> None:
    """The token is a secret: it is never stored in a replayable answer, and a retry with
    the same key after signing out signs in afresh instead of handing back the revoked one."""
    credentials = {"email": fan_a.email, "password": PASSWORD}
    first = await api.post("/sessions", json=credentials, headers={"Idempotency-Key": "sign-in-1"})
    assert first.status_code == 201
    token = first.json()["token"]
    stored = (await session.scalars(text("SELECT response_body FROM idempotency_keys"))).all()
    assert not any(token.encode() in bytes(body or b"") for body in stored)
    signed_out = await api.delete("/sessions/current", headers={"Authorization": f"Bearer {token}"})
    assert signed_out.status_code == 204
    retry = await api.post("/sessions", json=credentials, headers={"Idempotency-Key": "sign-in-1"})
    assert retry.status_code == 201
    assert "idempotent-replayed" not in retry.headers
    assert retry.json()["token"] != token
    me = await api.get("/me", headers={"Authorization": f"Bearer {retry.json()['token']}"})
    assert me.status_code == 200


async def test_an_email_is_registered_once_whatever_its_case(api: AsyncTestClient[Litestar]) -> None:
    await sign_up(api, "bob@example.org")
    taken = await api.post("/fans", json={"email": "BOB@example.org", "password": PASSWORD})
    assert taken.status_code == 409
    assert taken.headers["content-type"].startswith(PROBLEM)
    assert taken.json()["type"].endswith("/email-taken")


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "a@example.org", "password": "short"},
        {"email": "a@example.org", "password": "x" * 257},
        {"email": "a@example.org"},
        {"email": 5, "password": PASSWORD},
        {"email": "a@example.org", "password": PASSWORD, "display_name": "n" * 121},
    ],
)
async def test_bad_registrations_are_400_and_create_nothing(
    api: AsyncTestClient[Litestar], session: AsyncSession, body: dict[str, object]
) -> None:
    response = await api.post("/fans", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    assert await session.scalar(text("SELECT count(*) FROM fans")) == 0


async def test_wrong_password_and_unknown_email_get_the_same_answer(
    api: AsyncTestClient[Litestar], fan_a: SignedIn
) -> None:
    wrong = await api.post("/sessions", json={"email": fan_a.email, "password": "wrong password!"})
    unknown = await api.post("/sessions", json={"email": "nobody@example.org", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer nonsense", "Basic abc", "Bearer bofan_" + "x" * 43]
)
async def test_requests_without_a_valid_token_are_401(
    api: AsyncTestClient[Litestar], header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = await api.get("/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["type"].endswith("/not-authenticated")


async def test_signing_out_revokes_only_that_token(api: AsyncTestClient[Litestar], fan_a: SignedIn) -> None:
    other = await api.post("/sessions", json={"email": fan_a.email, "password": PASSWORD})
    other_headers = {"Authorization": f"Bearer {other.json()['token']}"}
    assert (await api.delete("/sessions/current", headers=fan_a.headers)).status_code == 204
    assert (await api.get("/me", headers=fan_a.headers)).status_code == 401
    assert (await api.get("/me", headers=other_headers)).status_code == 200
    assert (await api.delete("/sessions", headers=other_headers)).status_code == 204
    assert (await api.get("/me", headers=other_headers)).status_code == 401


async def test_an_expired_session_is_refused(
    api: AsyncTestClient[Litestar], session: AsyncSession, fan_a: SignedIn
) -> None:
    await session.execute(text("UPDATE fan_sessions SET expires_at = now() - interval '1 second'"))
    await session.commit()
    assert (await api.get("/me", headers=fan_a.headers)).status_code == 401

"""The demo's ``/documents/{id}`` does not tell whether a document exists to a user who may
not read it: a number with no row answers the same 403, reason and page (but for the number)
as another user's private document, on GET and on POST; a user who may read every document
(a moderator) gets 404 for a missing one; a segment that cannot be a number is 404 for all."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from bastion.engine.authz.record import ChangeKind
from test_demo import client_for, log_in, make_app, post_form
from test_demo_authz import reason, register, write

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from bastion.demo.app import DemoApp

MISSING = 987654


@pytest_asyncio.fixture
async def app() -> AsyncIterator[DemoApp]:
    demo = make_app()
    await demo.startup()
    yield demo
    await demo.shutdown()


def _shape(page: str, number: int) -> str:
    """The page without what differs per response (nonces, tokens) and the number asked."""
    page = re.sub(r'(nonce|value|content)="[^"]*"', r'\1=""', page)
    page = page.replace(f"documents:{number}<", "documents:N<").replace(
        f"documents:{number} ", "documents:N "
    )
    return page.replace(f'/documents/{number}"', '/documents/N"')


@pytest.mark.asyncio
async def test_a_missing_document_is_refused_like_another_users_private_one(
    app: DemoApp,
) -> None:
    async with client_for(app) as demo, client_for(app) as carol:
        await log_in(demo)
        private = await write(demo, "private")
        await register(carol, "carol")
        assert await app.documents.get(MISSING) is None

        there = await carol.get(f"/documents/{private}")
        absent = await carol.get(f"/documents/{MISSING}")
        assert (there.status_code, absent.status_code) == (403, 403)
        assert reason(there.text) == reason(absent.text) == "condition_failed"
        assert _shape(there.text, private) == _shape(absent.text, MISSING)
        padded = await carol.get(f"/documents/000{MISSING}")  # the same number, spelt longer
        assert padded.status_code == 403
        assert _shape(padded.text, MISSING) == _shape(absent.text, MISSING)

        for number in (private, MISSING):  # POST: the read is checked first, the same way
            path = f"/documents/{number}"
            edit = await post_form(carol, path, path, {"body": "x"})
            assert edit.status_code == 403
            assert reason(edit.text) == "condition_failed"
        row = await app.documents.get(private)
        assert row is not None
        assert row.body == "body of private"
        fails = [
            e
            for e in app.events
            if e.name == "authz_fail" and e.details.get("action") == "documents:read"
        ]
        assert {e.details.get("resource") for e in fails} == {
            f"documents:{private}",
            f"documents:{MISSING}",
        }


@pytest.mark.asyncio
async def test_a_reader_of_every_document_learns_it_is_missing(app: DemoApp) -> None:
    async with client_for(app) as admin, client_for(app) as mona:
        await log_in(admin, username="admin")
        await register(mona, "mona")
        await app.runtime.authz.change("admin", "mona", ChangeKind.SET_ROLES, ("moderator",))
        assert (await mona.get(f"/documents/{MISSING}")).status_code == 404
        assert (await admin.get(f"/documents/{MISSING}")).status_code == 404
        path = f"/documents/{MISSING}"
        assert (await post_form(admin, path, path, {"body": "x"})).status_code == 404
        for odd in ("abc", "-1", "9" * 40):
            assert (await mona.get(f"/documents/{odd}")).status_code == 404

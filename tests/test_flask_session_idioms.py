"""Flask's own session idioms under bastion.flask, on every store.

The cases follow Flask's session and flashing tests (pallets/flask tests/test_basic.py:
``test_flashes``, ``test_extended_flashing``, ``test_session_expiration``,
``test_session_stored_last``, ``test_session_special_types``), rewritten against bastion's
server-side session: a real Flask app, the werkzeug test client, real memory/SQLite/Redis
stores. Tuples (what ``flash()`` stores) come back as lists; other non-JSON values are refused
with a :class:`SessionDataError` that names the key.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, flash, get_flashed_messages, jsonify, redirect, session
from markupsafe import Markup

from bastion.config import Bastion
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.errors import SessionDataError
from bastion.flask import protect
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from flask.testing import FlaskClient

    from bastion.stores.base import Store

HTTPS = "https://localhost"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


def make_app(store: Store, clock: FrozenClock) -> Flask:
    app = Flask(__name__)
    app.testing = True  # a failing assertion or error in a view reaches the test, not a 500
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), clock, RecordingAuditSink())
    config = Bastion(
        store=store,
        auditor=auditor,
        clock=clock,
        csrf=None,
        headers=None,
        environment=Environment.TEST,
    )
    protect(app, config)
    return app


def client_of(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    return client


def get(client: FlaskClient, path: str, **kwargs: Any) -> Any:
    return client.get(path, base_url=HTTPS, **kwargs)


def post(client: FlaskClient, path: str, **kwargs: Any) -> Any:
    return client.post(path, base_url=HTTPS, **kwargs)


def test_flash_across_a_redirect(any_store: Store, clock: FrozenClock) -> None:
    app = make_app(any_store, clock)

    @app.post("/save")
    def save() -> Any:
        flash("Saved")
        flash("Check the address", "warning")
        flash(Markup("<em>Done</em>"), "info")
        return redirect("/next")

    @app.get("/next")
    def after() -> Any:
        return jsonify(get_flashed_messages(with_categories=True))

    client = client_of(app)
    response = post(client, "/save", follow_redirects=True)
    assert response.status_code == 200
    assert response.get_json() == [
        ["message", "Saved"],
        ["warning", "Check the address"],
        ["info", "<em>Done</em>"],
    ]
    # Read once: the messages are gone on the next request.
    assert get(client, "/next").get_json() == []


def test_flash_categories_and_filters(any_store: Store, clock: FrozenClock) -> None:
    app = make_app(any_store, clock)

    @app.get("/")
    def index() -> str:
        flash("Hello World")
        flash("Hello World", "error")
        flash(Markup("<em>Testing</em>"), "warning")
        return ""

    @app.get("/plain")
    def plain() -> Any:
        return jsonify(get_flashed_messages())

    @app.get("/filter")
    def one_category() -> Any:
        return jsonify(get_flashed_messages(category_filter=["message"], with_categories=True))

    @app.get("/filters")
    def two_categories() -> Any:
        return jsonify(get_flashed_messages(category_filter=["message", "warning"]))

    @app.get("/template")
    def template() -> str:
        return app.jinja_env.from_string(
            "{% for category, message in get_flashed_messages(with_categories=true) %}"
            "[{{ category }}:{{ message }}]{% endfor %}"
        ).render()

    expected = {
        "/plain": ["Hello World", "Hello World", "<em>Testing</em>"],
        "/filter": [["message", "Hello World"]],
        "/filters": ["Hello World", "<em>Testing</em>"],
    }
    for path, messages in expected.items():
        client = client_of(app)
        get(client, "/")
        assert get(client, path).get_json() == messages
    client = client_of(app)
    get(client, "/")
    # Markup comes back as text (JSON has no Markup), so a template escapes it: the safe side.
    assert get(client, "/template").text == (
        "[message:Hello World][error:Hello World][warning:&lt;em&gt;Testing&lt;/em&gt;]"
    )


def test_flash_and_read_in_one_request_and_modified(any_store: Store, clock: FrozenClock) -> None:
    app = make_app(any_store, clock)

    @app.post("/")
    def index() -> Any:
        before = session.modified
        flash("Zap")
        session.modified = False
        flash("Zip")
        return jsonify(before=before, after=session.modified, messages=get_flashed_messages())

    client = client_of(app)
    assert post(client, "/").get_json() == {
        "before": False,
        "after": True,
        "messages": ["Zap", "Zip"],
    }


def test_tuples_round_trip_as_lists(any_store: Store, clock: FrozenClock) -> None:
    app = make_app(any_store, clock)

    @app.post("/write")
    def write() -> Any:
        session["t"] = (1, 2, 3)
        session["nested"] = {"pairs": [("a", 1), ("b", (2, 3))]}
        session.update(more=("x",))
        default = session.setdefault("fresh", (4, 5))
        return jsonify(same_request=session["t"], default=default)

    @app.get("/read")
    def read() -> Any:
        return jsonify(
            t=session["t"],
            t_is_list=type(session["t"]) is list,
            nested=session["nested"],
            more=session["more"],
            fresh=session["fresh"],
        )

    client = client_of(app)
    # What the handler reads in the same request is what later requests read: a list.
    assert post(client, "/write").get_json() == {"same_request": [1, 2, 3], "default": [4, 5]}
    assert get(client, "/read").get_json() == {
        "t": [1, 2, 3],
        "t_is_list": True,
        "nested": {"pairs": [["a", 1], ["b", [2, 3]]]},
        "more": ["x"],
        "fresh": [4, 5],
    }


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        uuid.UUID(int=1),
        b"\xff",
        {1, 2},
        (1, {2}),
        float("nan"),
    ],
    ids=["datetime", "uuid", "bytes", "set", "set-in-tuple", "nan"],
)
def test_a_non_json_value_is_a_typed_error_naming_the_key(
    any_store: Store, clock: FrozenClock, value: object
) -> None:
    app = make_app(any_store, clock)

    @app.post("/")
    def index() -> str:
        session["special"] = value
        return "stored"

    client = client_of(app)
    with pytest.raises(SessionDataError, match=re.escape("session['special']")):
        post(client, "/")


def test_a_non_json_value_added_in_place_is_a_typed_error(
    any_store: Store, clock: FrozenClock
) -> None:
    app = make_app(any_store, clock)

    @app.post("/")
    def index() -> str:
        session.setdefault("cart", []).append(dt.date(2024, 1, 1))
        session.modified = True
        return "stored"

    client = client_of(app)
    with pytest.raises(SessionDataError, match=re.escape("session['cart']")):
        post(client, "/")


def test_a_non_json_value_without_testing_is_a_500_with_the_reason_logged(
    any_store: Store, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(any_store, clock)
    app.testing = False

    @app.post("/")
    def index() -> str:
        session["when"] = dt.date(2024, 1, 1)
        return "stored"

    client = client_of(app)
    response = post(client, "/")
    assert response.status_code == 500
    assert "Set-Cookie" not in response.headers
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is SessionDataError]
    assert logged
    assert "session['when']" in str(logged[0].exc_info[1])


def test_permanent_session_sets_expires(any_store: Store, clock: FrozenClock) -> None:
    app = make_app(any_store, clock)

    @app.post("/")
    def index() -> str:
        session["test"] = 42
        session.permanent = bool(int(str(session.get("choice", 1))))
        return ""

    @app.post("/ephemeral")
    def ephemeral() -> str:
        session["test"] = 42
        session.permanent = False
        return ""

    @app.get("/test")
    def test() -> str:
        return str(session.permanent)

    client = client_of(app)
    response = post(client, "/")
    assert re.search(r"(?i)\b(expires|max-age)=", response.headers["Set-Cookie"])
    assert get(client, "/test").text == "True"
    other = client_of(app)
    response = post(other, "/ephemeral")
    assert not re.search(r"(?i)\b(expires|max-age)=", response.headers["Set-Cookie"])
    assert get(other, "/test").text == "False"


def test_session_written_in_after_request_is_stored(any_store: Store, clock: FrozenClock) -> None:
    app = make_app(any_store, clock)

    @app.after_request
    def modify_session(response: Any) -> Any:
        session["foo"] = 42
        return response

    @app.get("/")
    def dump() -> str:
        return repr(session.get("foo"))

    client = client_of(app)
    assert get(client, "/").text == "None"
    assert get(client, "/").text == "42"


def test_pop_setdefault_clear_and_nested_mutation(any_store: Store, clock: FrozenClock) -> None:
    app = make_app(any_store, clock)

    @app.post("/fill")
    def fill() -> Any:
        session["a"] = 1
        session["b"] = 2
        session.setdefault("items", []).append("first")
        session.modified = True
        return jsonify(setdefault_existing=session.setdefault("a", 99))

    @app.post("/nested")
    def nested() -> str:
        session["items"].append("second")
        session["deep"] = {"x": {"y": []}}
        session["deep"]["x"]["y"].append(("z", 1))
        session.modified = True
        return ""

    @app.post("/pop")
    def pop() -> Any:
        return jsonify(popped=session.pop("a"), missing=session.pop("nope", "default"))

    @app.post("/clear")
    def clear() -> str:
        session.clear()
        return ""

    @app.get("/dump")
    def dump() -> Any:
        return jsonify(dict(session))

    client = client_of(app)
    assert post(client, "/fill").get_json() == {"setdefault_existing": 1}
    assert get(client, "/dump").get_json() == {"a": 1, "b": 2, "items": ["first"]}
    post(client, "/nested")
    assert get(client, "/dump").get_json() == {
        "a": 1,
        "b": 2,
        "items": ["first", "second"],
        "deep": {"x": {"y": [["z", 1]]}},
    }
    assert post(client, "/pop").get_json() == {"popped": 1, "missing": "default"}
    assert "a" not in get(client, "/dump").get_json()
    post(client, "/clear")
    assert get(client, "/dump").get_json() == {}

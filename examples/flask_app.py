"""bastion on Flask: the demo's protections on a small app, through ``bastion.flask``.

Server-side sessions behind ``flask.session`` (the ID rotates on login), CSRF, the strict
security headers and a rate limit, the NIST password policy, Argon2id and the login throttle
(the ``*_sync`` twins: no event loop). Run it with ``python examples/flask_app.py --port 5000``
(loopback, plain HTTP: an explicit development mode), or import ``create_app``.
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

from flask import Flask, redirect, render_template_string, request

import bastion
import bastion.flask
from bastion.flask import session

__all__ = ["create_app", "main"]

HOME = """<!doctype html><title>bastion + Flask</title>
<p>{{ "Logged in as " ~ user if user else "Not logged in" }}</p>
{% if user %}<form method="post" action="/logout">{{ csrf_input() }}<button>Log out</button></form>
{% else %}{% for action in ("register", "login") %}<form method="post" action="/{{ action }}">
{{ csrf_input() }}<input name="username" placeholder="user name" autocomplete="username">
<input name="password" type="password" placeholder="password"><button>{{ action }}</button></form>
{% endfor %}{% endif %}"""


def create_app(
    store_url: str = "sqlite:///bastion-flask-example.db",
    *,
    keyring: bastion.KeyRing | None = None,
    hasher: bastion.PasswordHasher | None = None,
    clock: bastion.Clock = bastion.system_clock,
    development: bool = False,
) -> Flask:
    """The example app. ``development=True`` sends the session cookie without ``Secure`` so
    that plain HTTP on loopback works (logged; refused when ``ENV=production``)."""
    hasher = hasher or bastion.PasswordHasher()
    policy = bastion.default_policy(site_words=("bastion",))
    users: dict[str, str] = {}  # user name -> Argon2id hash: the app's own user table
    users_lock = threading.Lock()

    app = Flask(__name__)
    config = bastion.Bastion(
        store=store_url,
        keyring=keyring or bastion.KeyRing.generate(),
        clock=clock,
        sessions=bastion.SessionConfig(development=True, secure=False) if development else None,
        rate_limits=(
            bastion.Rule("pages", "300/minute"),
            bastion.Rule("login", "10/minute", path="/login", methods={"POST"}),
        ),
    )
    runtime = bastion.flask.protect(app, config)  # flask.session, CSRF, headers, limits
    throttle = runtime.throttle

    def current_user() -> str | None:
        return session.user_id

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/")
    def home() -> str:
        return render_template_string(HOME, user=current_user())

    @app.get("/account")
    def account() -> Any:
        user = current_user()
        return ({"user": user}, 200) if user else ({"error": "not_logged_in"}, 401)

    @app.post("/register")
    def register() -> Any:
        username, password = request.form.get("username", ""), request.form.get("password", "")
        name = bastion.normalize_username(username)
        result = policy.check(password, user_inputs=(name, username))
        if not name or not result.ok:
            return {"error": "password_rejected", "reasons": list(result.messages)}, 400
        password_hash = hasher.hash(password)
        with users_lock:
            if name in users:
                return {"error": "username_taken"}, 409
            users[name] = password_hash
        session.login(name)  # a new session ID and CSRF secret
        return redirect("/account", 303)

    @app.post("/login")
    def sign_in() -> Any:
        username, password = request.form.get("username", ""), request.form.get("password", "")
        name = bastion.normalize_username(username)

        def verify() -> bool:  # an unknown user (None) costs one verification too
            outcome = hasher.verify_and_update(users.get(name), password)
            if outcome.valid and outcome.new_hash is not None:
                users[name] = outcome.new_hash  # parameters changed: keep the new hash
            return outcome.valid

        try:  # the device cookie (from an earlier login) lets the owner in during an attack
            attempt = throttle.attempt_sync(
                username,
                request.remote_addr or "",
                verify,
                device_cookie=request.cookies.get(
                    throttle.device_cookie_name(secure=not development)
                ),
            )
        except bastion.PasswordRejected:  # over the length cap, refused before any hashing
            return {"error": "password_too_long"}, 400
        if attempt.outcome is bastion.LoginOutcome.THROTTLED:
            retry = {"Retry-After": attempt.decision.retry_after_header}
            return {"error": "too_many_attempts"}, 429, retry
        if not attempt.ok:
            return {"error": "invalid_credentials"}, 401
        session.login(name)  # rotates the session ID: the pre-login cookie is dead
        response = redirect("/account", 303)
        if attempt.device_cookie is not None:  # logs in even while the account is attacked
            cookie = throttle.device_cookie(attempt.device_cookie, secure=not development)
            response.headers.add("Set-Cookie", cookie.serialize())
        return response

    @app.post("/logout")
    def sign_out() -> Any:
        session.logout()  # server data deleted, cookie expired, Clear-Site-Data sent
        return redirect("/", 303)

    return app


def main(argv: list[str] | None = None) -> None:
    """``python examples/flask_app.py [--port N] [--store URL]``: serve on 127.0.0.1."""
    from werkzeug.serving import run_simple  # noqa: PLC0415 (only the script needs it)

    parser = argparse.ArgumentParser(description="bastion's Flask example on 127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--store", default="sqlite:///bastion-flask-example.db")
    args = parser.parse_args(argv)
    app = create_app(args.store, development=True)
    run_simple("127.0.0.1", args.port, app, threaded=True)


if __name__ == "__main__":
    main()

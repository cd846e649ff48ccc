"""bastion on Flask: the demo's protections on a small app, through ``bastion.flask``.

Server-side sessions behind ``flask.session`` (the ID rotates on login), CSRF, the strict
security headers and a rate limit, the NIST password policy, Argon2id and the login throttle
(the ``*_sync`` twins: no event loop). Run it with ``python examples/flask_app.py --port 5000``
(loopback, plain HTTP: an explicit development mode), or import ``create_app``.
"""

from __future__ import annotations

import argparse
import threading
from typing import TYPE_CHECKING, Any

from flask import Flask, redirect, render_template_string, request, session

from bastion.core.clock import system_clock
from bastion.core.keys import KeyRing
from bastion.core.sessions import SessionConfig
from bastion.core.throttle import normalize_username
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.engine.throttle import LoginOutcome, LoginThrottle
from bastion.errors import PasswordRejected
from bastion.flask import CSRF, Bastion, login, logout
from bastion.passwords import PasswordHasher, default_policy
from bastion.stores import open_store
from bastion.stores.ratelimit import open_ratelimit_store
from bastion.wsgi import protect

if TYPE_CHECKING:
    from bastion.core.clock import Clock

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
    ratelimit_url: str = "memory://",
    keyring: KeyRing | None = None,
    hasher: PasswordHasher | None = None,
    clock: Clock = system_clock,
    development: bool = False,
) -> Flask:
    """The example app. ``development=True`` sends the session cookie without ``Secure`` so
    that plain HTTP on loopback works (logged; refused when ``ENV=production``)."""
    keyring = keyring or KeyRing.generate()
    hasher = hasher or PasswordHasher()
    policy = default_policy(site_words=("bastion",))
    store = open_store(store_url, clock=clock)
    throttle = LoginThrottle(store, keyring, clock=clock)
    users: dict[str, str] = {}  # user name -> Argon2id hash: the app's own user table
    users_lock = threading.Lock()

    app = Flask(__name__)
    sessions = SessionConfig(development=True, secure=False) if development else None
    Bastion(app, store=store, config=sessions, keyring=keyring, clock=clock)
    CSRF(app, keyring=keyring, clock=clock)  # the token lives in the session
    limiter = RateLimiter(open_ratelimit_store(ratelimit_url, clock=clock))
    login_posts = Rule("login", "10/minute", path="/login", methods={"POST"})
    app.wsgi_app = protect(  # type: ignore[method-assign, assignment]
        app.wsgi_app,  # sessions and CSRF come from the extensions above
        csrf=False,
        rate_limit={
            "limiter": limiter,
            "rules": [Rule("pages", "300/minute"), login_posts],
        },
        keyring=keyring,
        clock=clock,
    )

    def current_user() -> str | None:
        return session.user_id  # type: ignore[attr-defined, no-any-return]

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
        name = normalize_username(username)
        result = policy.check(password, user_inputs=(name, username))
        if not name or not result.ok:
            return {"error": "password_rejected", "reasons": list(result.messages)}, 400
        password_hash = hasher.hash(password)
        with users_lock:
            if name in users:
                return {"error": "username_taken"}, 409
            users[name] = password_hash
        login(name)  # a new session ID and CSRF secret
        return redirect("/account", 303)

    @app.post("/login")
    def sign_in() -> Any:
        username, password = request.form.get("username", ""), request.form.get("password", "")
        name = normalize_username(username)

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
        except PasswordRejected:  # over the length cap, refused before any hashing
            return {"error": "password_too_long"}, 400
        if attempt.outcome is LoginOutcome.THROTTLED:
            retry = {"Retry-After": attempt.decision.retry_after_header}
            return {"error": "too_many_attempts"}, 429, retry
        if not attempt.ok:
            return {"error": "invalid_credentials"}, 401
        login(name)  # rotates the session ID: the pre-login cookie is dead
        response = redirect("/account", 303)
        if attempt.device_cookie is not None:  # logs in even while the account is attacked
            cookie = throttle.device_cookie(attempt.device_cookie, secure=not development)
            response.headers.add("Set-Cookie", cookie.serialize())
        return response

    @app.post("/logout")
    def sign_out() -> Any:
        logout()  # server data deleted, cookie expired, Clear-Site-Data sent
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

"""``bastion dev-cert`` and ``bastion demo --https``: a local CA, a localhost certificate, and the
demo served over TLS, checked with real TLS clients (``ssl`` and httpx) that verify against the
generated CA, and fail without it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from bastion.cli import devcert
from bastion.demo import PASSWORD_SETTING
from servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

SEED = "correct horse battery staple violin"


def bastion(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("bastion")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bastion.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_dev_cert_makes_a_constrained_ca_and_a_localhost_certificate(tmp_path: Path) -> None:
    where = tmp_path / "ca"
    done = bastion("dev-cert", "--dir", str(where))
    assert done.returncode == 0, done.stderr
    assert f"development CA (new): {where / 'ca.pem'}" in done.stdout
    assert "update-ca-certificates" in done.stdout  # how to trust it
    assert "PRIVATE KEY" not in done.stdout

    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    for key in ("ca-key.pem", "localhost-key.pem"):
        assert stat.S_IMODE((where / key).stat().st_mode) == 0o600

    ca = load(where / "ca.pem")
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert (basic.value.ca, basic.value.path_length) == (True, 0)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert not usage.digital_signature
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert set(constraints.value.permitted_subtrees or ()) == {
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")),
        x509.IPAddress(ipaddress.ip_network("::1/128")),
    }

    leaf = load(where / "localhost.pem")
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=devcert.LEAF_DAYS, minutes=5)


def test_a_web_pki_verifier_accepts_localhost_and_the_ca_vouches_for_nothing_else(
    tmp_path: Path,
) -> None:
    made = devcert.ensure(tmp_path)
    ca = load(made.ca_file)
    leaf = load(made.cert_file)
    now = dt.datetime.now(dt.UTC)
    policy = verification.PolicyBuilder().store(verification.Store([ca])).time(now)
    for name in (
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ):
        policy.build_server_verifier(name).verify(leaf, [])
    with pytest.raises(verification.VerificationError):
        policy.build_server_verifier(x509.DNSName("example.com")).verify(leaf, [])

    # Even with the CA's key, a certificate for another name does not verify (nameConstraints).
    ca_key = serialization.load_pem_private_key(
        (tmp_path / "ca-key.pem").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    other_key = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.subject)
        .public_key(other_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank.example")]), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(verification.VerificationError, match="name constraints"):
        policy.build_server_verifier(x509.DNSName("bank.example")).verify(forged, [])


def test_the_ca_is_kept_and_the_certificate_renewed_when_due(tmp_path: Path) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    first = devcert.ensure(tmp_path, now=now)
    assert (first.created_ca, first.created_cert) == (True, True)
    ca_bytes, leaf_bytes = first.ca_file.read_bytes(), first.cert_file.read_bytes()

    again = devcert.ensure(tmp_path, now=now + dt.timedelta(days=1))
    assert (again.created_ca, again.created_cert) == (False, False)
    assert first.cert_file.read_bytes() == leaf_bytes

    due = now + dt.timedelta(days=devcert.LEAF_DAYS - devcert.RENEW_DAYS + 1)
    renewed = devcert.ensure(tmp_path, now=due)
    assert (renewed.created_ca, renewed.created_cert) == (False, True)
    assert first.ca_file.read_bytes() == ca_bytes  # the trusted CA stays the same
    load(renewed.cert_file).verify_directly_issued_by(load(renewed.ca_file))


def test_a_damaged_ca_directory_is_a_one_line_error(tmp_path: Path) -> None:
    devcert.ensure(tmp_path)
    (tmp_path / "ca.pem").write_text("not a certificate")
    done = bastion("dev-cert", "--dir", str(tmp_path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "is not a PEM certificate and key" in done.stderr


@pytest.fixture
def https_demo(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``bastion demo --https`` on a free port in a subprocess; (base URL, CA file)."""
    where = tmp_path / "dev-ca"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", PASSWORD_SETTING: SEED}
    env.pop("ENV", None)
    env.pop("BASTION_ENV", None)
    script = Path(sys.executable).with_name("bastion")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bastion.cli"]
    proc = subprocess.Popen(
        [*command, "demo", "--https", "--cert-dir", str(where), "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the banner comes once the server listens
        match = re.fullmatch(r"bastion demo: (https://127\.0\.0\.1:\d+)/\n", first)
        assert match, (first, proc.stderr.read() if proc.poll() is not None else "")
        yield match.group(1), where / "ca.pem"
    finally:
        proc.terminate()
        _, errors = proc.communicate(timeout=20)
    assert "Traceback" not in errors
    assert "development=True" not in errors  # no plain-HTTP opt-out over HTTPS


@pytest.mark.slow
def test_demo_https_serves_secure_cookies_and_hsts(https_demo: tuple[str, Path]) -> None:
    base, ca_file = https_demo
    trusted = ssl.create_default_context(cafile=str(ca_file))
    with httpx.Client(verify=trusted, timeout=10) as client:
        response = client.get(base + "/login")
    assert response.status_code == 200
    assert response.headers["strict-transport-security"].startswith("max-age=63072000")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-session=")
    assert "; Secure" in cookie
    assert "; HttpOnly" in cookie

    # A login over TLS works end to end (CSRF token from the page, Secure cookie sent back).
    with httpx.Client(verify=trusted, timeout=10, base_url=base) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, page.text
        login = client.post(
            "/login",
            data={"username": "demo", "password": SEED, "csrf_token": token.group(1)},
            headers={"Origin": base},
        )
        assert login.status_code == 303, login.text
        assert client.get("/account").status_code == 200


@pytest.mark.slow
def test_demo_https_is_refused_without_the_ca(https_demo: tuple[str, Path]) -> None:
    base, _ = https_demo
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(base + "/login", verify=ssl.create_default_context(), timeout=10)
    port = int(base.rsplit(":", 1)[1])
    # A raw ssl client checks the name too: the certificate names 127.0.0.1.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        context = ssl.create_default_context(cafile=None)
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_demo_https_without_cryptography_names_the_extra(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    # A module named cryptography that fails to import, ahead of the real one on the path.
    (blocker / "cryptography").mkdir()
    (blocker / "cryptography" / "__init__.py").write_text("raise ImportError('blocked')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), *sys.path])}
    done = bastion("dev-cert", "--dir", str(tmp_path / "ca"), env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "bastion dev-cert: needs the cryptography package for certificates: "
        "pip install 'bastion[tls]'"
    )
    demo = bastion("demo", "--https", "--cert-dir", str(tmp_path / "ca"), env=env)
    assert demo.returncode == 2
    assert "pip install 'bastion[tls]'" in demo.stderr
    assert demo.stdout == ""


def test_a_directory_that_cannot_be_written_is_a_one_line_error(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    for command in (
        ("dev-cert", "--dir", str(blocked / "ca")),
        ("demo", "--https", "--cert-dir", str(blocked / "ca"), "--store", "memory://"),
    ):
        done = bastion(*command)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert f"cannot write the development CA in {blocked / 'ca'}" in lines[0]

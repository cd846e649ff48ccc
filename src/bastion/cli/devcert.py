"""``bastion dev-cert``: a local certificate authority and a localhost certificate signed by it.

Development then runs over HTTPS as production does: ``Secure`` and ``__Host-`` cookies, HSTS,
no ``development=True`` opt-out. The directory (default ``~/.local/share/bastion/dev-ca``,
``--dir`` to choose) holds:

* ``ca.pem`` / ``ca-key.pem``: the CA, made once and kept (the user trusts it once). P-256,
  valid :data:`CA_DAYS` days, ``BasicConstraints(ca, pathlen=0)`` and name constraints that
  permit only ``localhost``, ``127.0.0.0/8`` and ``::1``: a client that enforces them (OpenSSL,
  NSS, the browsers) accepts nothing else from this CA, even if its key leaks.
* ``localhost.pem`` / ``localhost-key.pem``: the server certificate for ``localhost``,
  ``127.0.0.1`` and ``::1`` (SAN), ``serverAuth`` only, valid :data:`LEAF_DAYS` days; made
  again when it is missing, expires within :data:`RENEW_DAYS` days, or was not signed by the
  CA in the directory.

Keys are written with mode 0600 (the directory 0700), never printed. Needs the ``cryptography``
package: ``pip install 'bastion[tls]'``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bastion.cli._common import CommandError

if TYPE_CHECKING:
    import argparse

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["CA_DAYS", "LEAF_DAYS", "RENEW_DAYS", "DevCert", "default_dir", "ensure", "trust_help"]

CA_DAYS: Final = 825
LEAF_DAYS: Final = 30
RENEW_DAYS: Final = 7
_CA, _CA_KEY = "ca.pem", "ca-key.pem"
_LEAF, _LEAF_KEY = "localhost.pem", "localhost-key.pem"
_NAMES: Final = ("localhost",)
_ADDRESSES: Final = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class DevCert:
    """The files of a development CA directory, and whether this call wrote them."""

    directory: Path
    ca_file: Path
    cert_file: Path
    key_file: Path
    created_ca: bool
    created_cert: bool


def default_dir() -> Path:
    """``~/.local/share/bastion/dev-ca`` (environment variables are read in one place only,
    :mod:`bastion.core.environment`; ``--dir`` chooses another directory)."""
    return Path.home() / ".local" / "share" / "bastion" / "dev-ca"


def _crypto() -> None:
    try:
        import cryptography  # noqa: F401, PLC0415 (the tls extra, imported on use)
    except ImportError:
        raise CommandError(
            "needs the cryptography package for certificates: pip install 'bastion[tls]'",
            exit_code=2,
        ) from None


def ensure(
    directory: Path | None = None, *, force: bool = False, now: dt.datetime | None = None
) -> DevCert:
    """The CA and the localhost certificate in ``directory``, made where missing or due.

    ``force`` makes a new certificate (never a new CA: delete the directory for that, and
    trust the new CA again). Raises :class:`CommandError` for a directory that cannot be
    written or files that are not a CA and certificate made by this command.
    """
    _crypto()
    where = (directory or default_dir()).expanduser()
    moment = now or dt.datetime.now(dt.UTC)
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca_cert, ca_key, created_ca = _load_or_make_ca(where, moment)
        created_cert = force or created_ca or _leaf_is_due(where, ca_cert, moment)
        if created_cert:
            _make_leaf(where, ca_cert, ca_key, moment)
    except OSError as exc:
        raise CommandError(f"cannot write the development CA in {where}: {exc}") from None
    return DevCert(
        directory=where,
        ca_file=where / _CA,
        cert_file=where / _LEAF,
        key_file=where / _LEAF_KEY,
        created_ca=created_ca,
        created_cert=created_cert,
    )


def _load_or_make_ca(
    where: Path, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    cert_path, key_path = where / _CA, where / _CA_KEY
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except ValueError:
            raise CommandError(
                f"{cert_path} or {key_path} is not a PEM certificate and key; delete the "
                "directory to make a new CA (and trust it again)"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != (
            cert.public_key()
        ):
            raise CommandError(f"{key_path} is not the key of {cert_path}; delete the directory")
        if cert.not_valid_after_utc > now:
            return cert, key, False
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _ca_certificate(key, now)
    _write_key(key_path, key)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return cert, key, True


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    owner = f"{_user()}@{platform.node() or 'localhost'}"
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bastion development CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"bastion development CA ({owner})"[:64]),
        ]
    )
    public = key.public_key()
    permitted: list[x509.GeneralName] = [x509.DNSName(n) for n in _NAMES]
    permitted += [
        x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")),
        x509.IPAddress(ipaddress.ip_network("::1/128")),
    ]
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf_is_due(where: Path, ca_cert: x509.Certificate, now: dt.datetime) -> bool:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415

    cert_path, key_path = where / _LEAF, where / _LEAF_KEY
    if not (cert_path.exists() and key_path.exists()):
        return True
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return True  # unreadable, or signed by another CA: make it again
    return cert.not_valid_after_utc - dt.timedelta(days=RENEW_DAYS) <= now


def _make_leaf(
    where: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> None:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in _NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in _ADDRESSES]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(where / _LEAF_KEY, key)
    # The chain a server sends: the certificate, then the CA.
    chain = cert.public_bytes(serialization.Encoding.PEM)
    chain += ca_cert.public_bytes(serialization.Encoding.PEM)
    _write(where / _LEAF, chain, mode=0o644)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, data, mode=0o600)


def _write(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` atomically, the file created with ``mode`` from the start
    (a key is never readable by others, not even for a moment)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # the umask may have narrowed it; never widened
            handle.write(data)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "developer"


def trust_help(cert: DevCert) -> str:
    """What ``bastion dev-cert`` prints: the files and how to trust the CA."""
    ca = cert.ca_file
    state = "new" if cert.created_ca else "kept"
    lines = [
        f"development CA ({state}): {ca}",
        (
            f"certificate for localhost, 127.0.0.1, ::1: {cert.cert_file} "
            f"({'new' if cert.created_cert else 'kept'}; valid {LEAF_DAYS} days)"
        ),
        f"its key (mode 0600): {cert.key_file}",
        "",
        (
            "Serve with it: bastion demo --https, or uvicorn app:app "
            f"--ssl-certfile {cert.cert_file} --ssl-keyfile {cert.key_file}"
        ),
        "",
        "Trust the CA (once; it can only vouch for localhost, 127.0.0.0/8 and ::1):",
        f"  Python: httpx.get(url, verify=ssl.create_default_context(cafile={str(ca)!r}))",
        f"  curl --cacert {ca} https://localhost:8443/",
        f"  bastion check https://localhost:8443/ --ca-file {ca}",
        (
            f"  Debian/Ubuntu: sudo cp {ca} /usr/local/share/ca-certificates/bastion-dev-ca.crt "
            "&& sudo update-ca-certificates"
        ),
        f"  Fedora: sudo cp {ca} /etc/pki/ca-trust/source/anchors/ && sudo update-ca-trust",
        (
            "  macOS: sudo security add-trusted-cert -d -r trustRoot "
            f"-k /Library/Keychains/System.keychain {ca}"
        ),
        (
            f"  Chrome/Firefox on Linux (NSS): certutil -d sql:$HOME/.pki/nssdb -A -t C,, "
            f"-n 'bastion dev CA' -i {ca}"
        ),
        f"  Windows: certutil -addstore -user Root {ca}",
        "Keep the directory private: ca-key.pem can sign certificates for this machine's names.",
    ]
    return "\n".join(lines)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dev-cert",
        help="make a local CA and a localhost certificate for HTTPS in development",
        description=(
            "Create (once) a local certificate authority and a certificate for localhost, "
            "127.0.0.1 and ::1 signed by it, and print how to trust the CA. The CA is kept; "
            "the certificate is renewed when it nears its end. `bastion demo --https` uses "
            "the same directory. Needs pip install 'bastion[tls]'."
        ),
    )
    _add_dir(parser)
    parser.add_argument(
        "--force", action="store_true", help="make a new certificate now (the CA is kept)"
    )


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the CA and certificate live (default ~/.local/share/bastion/dev-ca)",
    )


def add_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--dir`` for ``bastion demo --https`` (the same directory as ``bastion dev-cert``)."""
    parser.add_argument(
        "--cert-dir",
        type=Path,
        default=None,
        help="with --https: the bastion dev-cert directory (default ~/.local/share/bastion/dev-ca)",
    )

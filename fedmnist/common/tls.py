"""Development TLS certificates, and the checks made before serving or connecting with them.

``./run.sh certs --host NAME`` (or ``python -m fedmnist.common.tls``) writes a
development certificate authority and a server certificate for NAME (plus
``localhost`` and ``127.0.0.1``) signed by it: ``ca.pem``, ``server.pem`` and
``server.key``. ``server.py --tls-dir DIR`` serves with them; ``client.py
--root-cert DIR/ca.pem`` accepts only a server whose certificate that CA
signed. For development and classrooms: a production federation wants
certificates from a real authority.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

from fedmnist.common.atomic import write_bytes_atomic
from fedmnist.common.errors import UserError

CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "server.pem", "server.key"
VALID_DAYS = 365


def generate_certificates(
    out_dir: str | Path, host: str, *, valid_days: int = VALID_DAYS, starts: datetime.datetime | None = None
) -> list[Path]:
    """Write a CA and a server certificate for ``host`` into ``out_dir``; return the three paths.

    They are valid for ``valid_days`` from ``starts`` (default: now).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = starts or datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedmnist development CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(_alternative_names(host)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out = Path(out_dir)
    files = {
        CA_FILE: ca_cert.public_bytes(serialization.Encoding.PEM),
        CERT_FILE: server_cert.public_bytes(serialization.Encoding.PEM),
        KEY_FILE: server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }
    for name, content in files.items():
        write_bytes_atomic(out / name, content, secret=name == KEY_FILE)
    return [out / name for name in files]


def _alternative_names(host: str) -> list:
    from cryptography import x509

    names: list = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    return names


def load_server_certificates(tls_dir: str | Path) -> tuple[bytes, bytes, bytes]:
    """(CA, server certificate, server key) from ``tls_dir``, checked to belong together."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    folder = Path(tls_dir)
    ca, cert, key = (_read(folder / name) for name in (CA_FILE, CERT_FILE, KEY_FILE))
    try:
        ca_cert, server_cert = x509.load_pem_x509_certificate(ca), x509.load_pem_x509_certificate(cert)
        private_key = serialization.load_pem_private_key(key, password=None)
    except ValueError as error:
        raise UserError(f"the TLS files in {folder} are not PEM certificates and key: {error}") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # Any kind of key.
    if private_key.public_key().public_bytes(*spki) != server_cert.public_key().public_bytes(*spki):
        raise UserError(f"{folder / KEY_FILE} is not the key of {folder / CERT_FILE}")
    try:
        server_cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as error:
        raise UserError(f"{folder / CERT_FILE} was not signed by {folder / CA_FILE} ({type(error).__name__})") from None
    for name, certificate in ((CA_FILE, ca_cert), (CERT_FILE, server_cert)):
        _check_dates(folder / name, certificate)
    return ca, cert, key


def _check_dates(path: Path, certificate: object) -> None:
    """Refuse a certificate that is expired or not valid yet: every client would fail its handshake."""
    now = datetime.datetime.now(datetime.UTC)
    if now > certificate.not_valid_after_utc:  # type: ignore[attr-defined]
        raise UserError(
            f"{path} expired on {certificate.not_valid_after_utc:%Y-%m-%d}; "  # type: ignore[attr-defined]
            "make new certificates (./run.sh certs)"
        )
    if now < certificate.not_valid_before_utc:  # type: ignore[attr-defined]
        raise UserError(
            f"{path} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "  # type: ignore[attr-defined]
            "(is this machine's clock right?)"
        )


def speaks_tls(server_address: str, timeout: float = 2.0) -> bool | None:
    """Whether the server at ``HOST:PORT`` answers a TLS handshake (None: could not tell).

    Used only to explain a failed connection: certificates are not checked here.
    """
    import socket
    import ssl

    host, _, port = server_address.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])  # gRPC servers refuse TLS without HTTP/2.
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host.strip("[]")),
        ):
            return True
    except ssl.SSLError:
        return False
    except OSError:
        return None


def load_root_certificate(path: str | Path) -> bytes:
    """A client's CA certificate, checked to be PEM."""
    from cryptography import x509

    content = _read(Path(path))
    try:
        x509.load_pem_x509_certificate(content)
    except ValueError as error:
        raise UserError(f"{path} is not a PEM certificate: {error}") from None
    return content


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read TLS file {path}: {error.strerror or error}") from None


def main(argv: list[str] | None = None) -> None:
    """Make a development CA and a server certificate for --host."""
    from fedmnist.common.cli import Parser, run_cli

    parser = Parser(prog="./run.sh certs", description=main.__doc__)
    parser.add_argument(
        "--host", default="localhost", help="server name or IP clients connect to (default: %(default)s)"
    )
    parser.add_argument(
        "--out", default="certs", help="folder for ca.pem, server.pem, server.key (default: %(default)s)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    def make() -> None:
        for path in generate_certificates(args.out, args.host):
            print(path)

    run_cli(make)


if __name__ == "__main__":
    main()

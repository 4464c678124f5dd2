"""The server serves TLS itself: ``fedsilo server start --tls-cert --tls-key`` as a real
process on 127.0.0.1 with a self-signed certificate made here; the SDK trusts it through
``--ca-cert`` / ``FEDSILO_CA_BUNDLE`` and nothing else."""

from __future__ import annotations

import ipaddress
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

import fedsilo
from fedsilo.cli.app import app
from fedsilo.errors import ConfigError, ServerUnavailable
from fedsilo.http import CA_BUNDLE_ENV, ApiClient
from fedsilo.runners.local import SERVER_START_TIMEOUT_S, ServerProcess, free_port
from fedsilo.server.state import utcnow

pytestmark = pytest.mark.e2e

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def self_signed(directory: Path, name: str = "server", ip: str = LOOPBACK) -> Certificate:
    """A certificate for ``ip`` that is its own CA (so it is also the bundle to trust), with
    the extensions a strict verifier asks of a CA and of a server certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fedsilo test {name}")])
    now = utcnow()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Certificate(cert_path, key_path)


def start_tls_server(data_dir: Path, tls: Certificate, log_path: Path) -> ServerProcess:
    """``fedsilo server start --tls-cert --tls-key`` on a free port, once ``/healthz``
    answers over https (verified against the server's own certificate)."""
    port = free_port()
    args = [
        sys.executable, "-m", "fedsilo", "server", "start",
        "--host", LOOPBACK, "--port", str(port), "--data-dir", str(data_dir),
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != CA_BUNDLE_ENV}
    server = ServerProcess(args, env, log_path, host=LOOPBACK, port=port, data_dir=data_dir)
    server.url = f"https://{LOOPBACK}:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    with ApiClient(server.url, "no-token-needed", ca_cert=tls.cert, timeout=2.0) as api:
        while True:
            try:
                if api.healthz().get("status") == "ok":
                    return server
            except ServerUnavailable:
                pass
            if not server.running or time.monotonic() > deadline:
                server.stop()
                pytest.fail(f"TLS server never answered /healthz:\n{server.log_tail()}")
            time.sleep(0.1)


@pytest.fixture
def tls(tmp_path: Path) -> Certificate:
    return self_signed(tmp_path / "tls")


@pytest.fixture
def tls_server(tmp_path: Path, tls: Certificate) -> Iterator[ServerProcess]:
    server = start_tls_server(tmp_path / "server", tls, tmp_path / "server.log")
    try:
        yield server
    finally:
        server.stop()  # SIGTERM to its pid, then SIGKILL


def test_the_server_answers_https_to_a_client_that_trusts_its_ca(
    tls_server: ServerProcess, tls: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ApiClient(tls_server.url, tls_server.admin_token, ca_cert=tls.cert) as api:
        assert api.healthz()["status"] == "ok"
    # the SDK, with the bundle from the environment, makes authenticated calls
    monkeypatch.setenv(CA_BUNDLE_ENV, str(tls.cert))
    with fedsilo.connect(tls_server.url, tls_server.admin_token) as client:
        assert "echo" in {package.name for package in client.packages()}


def test_an_untrusted_certificate_is_refused_not_retried(
    tls_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CA_BUNDLE_ENV, raising=False)
    with (
        ApiClient(tls_server.url, "t") as api,
        pytest.raises(ConfigError, match=r"is not trusted .*FEDSILO_CA_BUNDLE"),
    ):
        api.healthz()
    # another CA's bundle does not vouch for this server either
    other = self_signed(tmp_path / "other", name="other")
    with (
        ApiClient(tls_server.url, "t", ca_cert=other.cert) as api,
        pytest.raises(ConfigError, match="is not trusted"),
    ):
        api.healthz()
    # and plain httpx, verifying against its default store, fails the handshake
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_server.url}/healthz")


def test_plain_http_to_the_tls_port_gets_no_answer(tls_server: ServerProcess) -> None:
    plain = f"http://{LOOPBACK}:{tls_server.port}"
    with ApiClient(plain, "t", timeout=5.0) as api, pytest.raises(ServerUnavailable):
        api.healthz()
    assert tls_server.running


# ------------------------------------------------------------ refused before start

runner = CliRunner()


def start_args(tmp_path: Path, *tls_args: str) -> list[str]:
    return [
        "server", "start", "--port", str(free_port()), "--data-dir", str(tmp_path / "s"),
        *tls_args,
    ]  # fmt: skip


def one_line_error(result: object) -> str:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert result.exit_code == 2, stderr  # type: ignore[attr-defined]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_certificate_without_its_key_is_refused(
    tmp_path: Path, tls: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDSILO_TLS_KEY", raising=False)
    monkeypatch.delenv("FEDSILO_TLS_CERT", raising=False)
    line = one_line_error(runner.invoke(app, start_args(tmp_path, "--tls-cert", str(tls.cert))))
    assert "tls_key" in line and "tls_cert is set but tls_key is not" in line
    line = one_line_error(runner.invoke(app, start_args(tmp_path, "--tls-key", str(tls.key))))
    assert "tls_key is set but tls_cert is not" in line
    # the environment counts as given, the same as the option
    monkeypatch.setenv("FEDSILO_TLS_CERT", str(tls.cert))
    line = one_line_error(runner.invoke(app, start_args(tmp_path)))
    assert "tls_cert is set but tls_key is not" in line


def test_a_missing_or_mismatched_file_is_refused_naming_the_field(
    tmp_path: Path, tls: Certificate
) -> None:
    missing = str(tmp_path / "nope.pem")
    line = one_line_error(
        runner.invoke(app, start_args(tmp_path, "--tls-cert", missing, "--tls-key", str(tls.key)))
    )
    assert line.count("tls_cert: ") == 1 and "cannot read the file" in line and missing in line
    line = one_line_error(
        runner.invoke(app, start_args(tmp_path, "--tls-cert", str(tls.cert), "--tls-key", missing))
    )
    assert "tls_key: " in line and "cannot read the file" in line
    other = self_signed(tmp_path / "other", name="other")
    line = one_line_error(
        runner.invoke(
            app, start_args(tmp_path, "--tls-cert", str(tls.cert), "--tls-key", str(other.key))
        )
    )
    assert "tls_key: " in line and "not a PEM certificate and its unencrypted private key" in line
    assert "BEGIN" not in line  # no key material in the message


def test_an_unreadable_ca_bundle_names_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CA_BUNDLE_ENV, str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match=r"FEDSILO_CA_BUNDLE = '.*nope\.pem' cannot be used"):
        ApiClient(f"https://{LOOPBACK}:9", "t")
    ApiClient(f"http://{LOOPBACK}:9", "t").close()  # plain http never reads it

"""``urbanos serve`` as a real process: HTTPS with ``--tls-cert/--tls-key`` (a self-signed
certificate made here, trusted by the client), and the refusal to listen on every
interface without authentication unless ``--insecure-open`` (which starts, and warns)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.broker_process import free_port


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "urbanos test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def environment() -> dict[str, str]:
    """The test's environment without any URBANOS_* setting that would change the case."""
    return {k: v for k, v in os.environ.items() if not k.startswith("URBANOS_")}


class Serve:
    """``python -m urbanos.cli serve ARGS`` with its output in a log file."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.log = tmp / f"serve-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "urbanos.cli", "serve", "--port", str(self.port),
                 "--store", f"sqlite:///{tmp}/urbanos.db", "--log-level", "warning", *args],
                env=environment(), stdout=out, stderr=out,
            )

    def wait_healthy(self, url: str, client: httpx.Client, timeout: float = 20) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return client.get(url, timeout=1)
            except httpx.TransportError:
                assert self.proc.poll() is None, self.log.read_text()
                time.sleep(0.05)
        raise AssertionError(f"the broker did not answer: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for server in started:
        server.stop()


def test_serve_speaks_https_with_the_given_certificate(tmp_path: Path,
                                                       serving: list[Serve]) -> None:
    cert, key = self_signed(tmp_path)
    server = Serve(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    serving.append(server)
    trusted = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=trusted) as https:
        health = server.wait_healthy(f"https://127.0.0.1:{server.port}/health", https)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert https.get(f"https://localhost:{server.port}/version").json()["name"] == "urbanos"
    with httpx.Client(verify=ssl.create_default_context()) as untrusting:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.get(f"https://127.0.0.1:{server.port}/health")
    with httpx.Client() as plain:  # no plain HTTP on the TLS port
        with pytest.raises(httpx.TransportError):
            plain.get(f"http://127.0.0.1:{server.port}/health", timeout=3)


def test_every_interface_without_authentication_is_refused(tmp_path: Path,
                                                           serving: list[Serve]) -> None:
    server = Serve(tmp_path, "--host", "0.0.0.0")
    serving.append(server)
    assert server.proc.wait(30) != 0
    log = server.log.read_text()
    assert "refusing to listen on 0.0.0.0 without authentication" in log
    assert "--insecure-open" in log
    assert not (tmp_path / "urbanos.db").exists()  # it stopped before opening anything


def test_insecure_open_starts_and_warns(tmp_path: Path, serving: list[Serve]) -> None:
    server = Serve(tmp_path, "--host", "0.0.0.0", "--insecure-open")
    serving.append(server)
    with httpx.Client() as http:
        health = server.wait_healthy(f"http://127.0.0.1:{server.port}/health", http)
    assert health.status_code == 200
    log = server.log.read_text()
    assert '"level":"WARNING"' in log and "WITHOUT authentication (--insecure-open)" in log

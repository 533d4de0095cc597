"""TLS and mutual TLS with certificates made by openssl for the test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from gradhealth.client import GradientHealthClient, Retry, Tls
from tests.service import ServerProcess

pytestmark = pytest.mark.openssl


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(directory: Path, name: str, subject: str, extensions: str, ca: str = "ca") -> None:
    """A key and a certificate for `name`, signed by the CA `ca` (ca.pem, ca.key)."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj", subject,
             "-out", f"{name}.csr", cwd=directory)  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
             cwd=directory)  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    directory = Path(tmp_path_factory.mktemp("certs"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=gradhealth test CA", cwd=directory)  # fmt: skip
    _issue(directory, "server", "/CN=localhost",
           "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")  # fmt: skip
    _issue(directory, "client", "/CN=training-job",
           "extendedKeyUsage=clientAuth\n")  # fmt: skip
    # An intruder with a well-formed client certificate from a CA of its own.
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out",
             "rogue.pem", "-days", "2", "-subj", "/CN=rogue CA", cwd=directory)  # fmt: skip
    _issue(directory, "intruder", "/CN=training-job",
           "extendedKeyUsage=clientAuth\n", ca="rogue")  # fmt: skip
    return directory


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, certs):
    workdir = Path(tmp_path_factory.mktemp("mtls"))
    process = ServerProcess(
        workdir,
        "--tls-cert", str(certs / "server.pem"),
        "--tls-key", str(certs / "server.key"),
        "--tls-client-ca", str(certs / "ca.pem"),
    )  # fmt: skip
    process.start(wait=False)
    credentials = grpc.ssl_channel_credentials(
        (certs / "ca.pem").read_bytes(),
        (certs / "client.key").read_bytes(),
        (certs / "client.pem").read_bytes(),
    )
    process.wait_serving(credentials=credentials)
    yield process
    assert process.stop() == 0, process.log()


def test_mutual_tls_client_with_a_certificate_is_served(mtls_server, certs, checkpoints, batch):
    tls = Tls(certs / "ca.pem", certs / "client.pem", certs / "client.key")
    with GradientHealthClient(mtls_server.target, tls=tls) as client:
        verdict = client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="over-mtls")
    assert verdict.run_id == "over-mtls"


@pytest.mark.parametrize(
    "tls",
    [None, "no client certificate", "certificate from another CA"],
    ids=["plaintext", "no-client-cert", "rogue-ca-cert"],
)
def test_clients_without_tls_or_a_certificate_are_refused(mtls_server, certs, tls):
    settings = {
        None: None,
        "no client certificate": Tls(certs / "ca.pem"),
        "certificate from another CA": Tls(
            certs / "ca.pem", certs / "intruder.pem", certs / "intruder.key"
        ),
    }[tls]
    client = GradientHealthClient(mtls_server.target, tls=settings, retry=Retry(attempts=1))
    with client, pytest.raises(grpc.RpcError) as caught:
        client.list_runs(timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert mtls_server.health() is None  # no TLS: no answer at all
    credentials = grpc.ssl_channel_credentials(
        (certs / "ca.pem").read_bytes(),
        (certs / "client.key").read_bytes(),
        (certs / "client.pem").read_bytes(),
    )
    assert mtls_server.health(credentials) == health_pb2.HealthCheckResponse.SERVING


def test_metrics_are_served_over_mutual_tls_when_configured(tmp_path, certs):
    """/metrics lists every run id: with --metrics-tls-* it takes HTTPS only, and
    only from a scraper with a certificate from the CA."""
    import ssl
    import urllib.error
    import urllib.request

    server = ServerProcess(
        tmp_path,
        "--metrics-tls-cert", str(certs / "server.pem"),
        "--metrics-tls-key", str(certs / "server.key"),
        "--metrics-tls-client-ca", str(certs / "ca.pem"),
    ).start()  # fmt: skip
    try:
        url = f"://127.0.0.1:{server.metrics_port}/metrics"
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen("http" + url, timeout=5)  # plain HTTP: refused
        anonymous = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen("https" + url, timeout=5, context=anonymous).read()
        scraper = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        scraper.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
        text = urllib.request.urlopen("https" + url, timeout=5, context=scraper).read().decode()
        assert "gradhealth_queue_capacity" in text
    finally:
        assert server.stop() == 0, server.log()

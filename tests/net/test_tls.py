"""HTTPS through the pin: the socket goes to the checked address, while SNI, the Host header
and certificate verification all keep the name from the URL."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.net import FetchFailed, FetchPolicy, fetch
from tests.net.conftest import app
from tests.net.world import PUBLIC, FakeDns, FakeInternet, LoopbackServer


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for public.test only (made by the openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=public.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-addext",
            "subjectAltName=DNS:public.test",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


class TlsServer(LoopbackServer):
    server_names: list[str | None]


@pytest.fixture
async def tls_server(certificate: tuple[Path, Path]) -> AsyncIterator[TlsServer]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = TlsServer(app)
    server.server_names = []

    def record_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        server.server_names.append(name)

    context.sni_callback = record_sni
    await server.start(context)
    yield server
    await server.stop()


@pytest.fixture
def https(tls_server: TlsServer) -> FakeInternet:
    return FakeInternet({(PUBLIC, 443): tls_server.port})


@pytest.fixture
def trust(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


async def test_sni_host_and_certificate_use_the_name_while_the_socket_uses_the_pin(
    dns: FakeDns, https: FakeInternet, trust: ssl.SSLContext, tls_server: TlsServer
) -> None:
    result = await fetch(
        "https://public.test/small",
        policy=FetchPolicy(total_timeout=5),
        resolver=dns,
        network=https,
        ssl_context=trust,
    )
    assert (result.status, result.body, result.address) == (200, b"hello", PUBLIC)
    assert https.dialed == [(PUBLIC, 443)]
    assert tls_server.server_names == ["public.test"]
    assert tls_server.seen[0].headers["host"] == "public.test"


async def test_a_certificate_for_another_name_is_refused(
    dns: FakeDns, https: FakeInternet, trust: ssl.SSLContext
) -> None:
    dns.answers["other.test"] = [[PUBLIC]]
    with pytest.raises(FetchFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        await fetch(
            "https://other.test/small",
            policy=FetchPolicy(total_timeout=5),
            resolver=dns,
            network=https,
            ssl_context=trust,
        )
    assert https.dialed == [(PUBLIC, 443)]

"""The suite's client factories really scan: a leaking answer fails, a clean one is counted."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi import FastAPI

from tests.support.clients import asgi_client, http_client, sync_http_client
from tests.support.secrets import SCANNED

LEAK = {"id": 1, "hashed_password": "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA"}


def leaky_app() -> FastAPI:
    app = FastAPI()

    @app.get("/leak")
    async def leak() -> dict[str, object]:
        return LEAK

    @app.get("/clean")
    async def clean() -> dict[str, object]:
        return {"id": 1}

    return app


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(LEAK if self.path == "/leak" else {"id": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def leaky_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_asgi_client_fails_on_a_hash_and_counts_a_clean_answer() -> None:
    async with asgi_client(leaky_app()) as client:
        before = SCANNED["responses"]
        assert (await client.get("/clean")).json() == {"id": 1}
        assert SCANNED["responses"] == before + 1
        with pytest.raises(AssertionError, match="argon2 hash left the service"):
            await client.get("/leak")


async def test_http_client_fails_on_a_hash_from_a_real_server() -> None:
    with leaky_server() as base:
        async with http_client(base) as client:
            before = SCANNED["responses"]
            assert (await client.get("/clean")).status_code == 200
            assert SCANNED["responses"] == before + 1
            with pytest.raises(AssertionError, match="argon2 hash left the service"):
                await client.get("/leak")


def test_sync_http_client_fails_on_a_hash_from_a_real_server() -> None:
    with leaky_server() as base, sync_http_client(base) as client:
        before = SCANNED["responses"]
        assert client.get("/clean").status_code == 200
        assert SCANNED["responses"] == before + 1
        with pytest.raises(AssertionError, match="argon2 hash left the service"):
            client.get("/leak")

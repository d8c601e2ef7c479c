"""The tuspy client (written by others) against a real server process, cut off mid-upload."""

from __future__ import annotations

import asyncio
import io
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from server.blobstores.s3 import S3BlobStore
from tests.conftest import TEST_SECRET, Backend
from tests.fixtures.s3 import S3Server
from tests.helpers import Session
from tests.integration.uploads.helpers import MiB, png, read_blob, sha256_hex

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server_url(
    db: Backend, s3_server: S3Server, s3_store: S3BlobStore, tmp_path: Path
) -> Iterator[str]:
    """The app in its own process (as deployed), on this test's database and S3 bucket."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "FIELDSYNC_DATA_DIR": str(tmp_path),
        "FIELDSYNC_DATABASE_URL": db.url,
        "FIELDSYNC_SECRET_KEY": TEST_SECRET,
        "FIELDSYNC_BLOB_STORE": f"s3://{s3_store.bucket}",
        "FIELDSYNC_S3_ENDPOINT": s3_server.endpoint,
        "FIELDSYNC_S3_ACCESS_KEY": s3_server.access_key,
        "FIELDSYNC_S3_SECRET_KEY": s3_server.secret_key,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "tests.integration.uploads.server_process:app",
        ],
        env=env,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the server process exited during start-up"
            try:
                if httpx.get(url + "/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start within 30 s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


class CuttingProxy:
    """Forwards one TCP connection at a time and cuts it after `budget` bytes from the client."""

    def __init__(self, target_port: int, budget: int) -> None:
        self.target_port = target_port
        self.budget = budget
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(
                target=self._pump_back, args=(upstream, downstream), daemon=True
            ).start()
            self._pump_forward(downstream, upstream)

    def _pump_forward(self, downstream: socket.socket, upstream: socket.socket) -> None:
        try:
            while self.budget > 0 and (data := downstream.recv(min(65536, self.budget))):
                upstream.sendall(data)
                self.budget -= len(data)
        except OSError:
            pass
        for sock in (downstream, upstream):  # the cut: both sides see the connection drop
            try:
                sock.shutdown(socket.SHUT_RDWR)  # close() alone leaves a blocked recv's fd open
            except OSError:
                pass
            sock.close()

    @staticmethod
    def _pump_back(upstream: socket.socket, downstream: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                downstream.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def test_tuspy_upload_cut_at_a_random_offset_resumes(
    server_url: str, worker: Session, s3_store: S3BlobStore
) -> None:
    data = png(7 * MiB + 321)
    metadata = {"sha256": sha256_hex(data), "content_type": "image/png", "filename": "bar.png"}
    headers = worker.headers
    # Create through the server directly, then send the body through a proxy that cuts it.
    direct = tus_client.TusClient(server_url + "/api/v1/uploads", headers=headers)
    creator = direct.uploader(file_stream=io.BytesIO(data), metadata=metadata, chunk_size=1)
    upload_url = creator.create_url()
    cut_at = random.randint(len(data) // 5, len(data) * 9 // 10)
    port = int(server_url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, budget=cut_at)
    cut_url = upload_url.replace(f":{port}/", f":{proxy.port}/")
    try:
        cut = tus_client.TusClient(cut_url, headers=headers).uploader(
            file_stream=io.BytesIO(data), url=cut_url, metadata=metadata
        )
        with pytest.raises(TusCommunicationError):
            cut.upload()  # one PATCH with the whole file, cut part-way
    finally:
        proxy.close()
    # A HEAD that reaches the server before the cut PATCH's handler took the upload would still
    # see 0 and race it: resume, as a device would, once the server kept what arrived.
    deadline = time.monotonic() + 20
    while _offset(upload_url, headers) == 0:
        assert time.monotonic() < deadline, "the server kept nothing of the cut PATCH"
        time.sleep(0.05)

    resumed = direct.uploader(
        file_stream=io.BytesIO(data),
        url=upload_url,
        metadata=metadata,
        chunk_size=2 * MiB,
        upload_checksum=True,  # tuspy's sha1 Upload-Checksum on every chunk
    )
    resumed_from = resumed.offset
    resumed.upload()

    # What arrived before the cut was kept (headers take a few hundred of the proxied bytes).
    assert 0 < resumed_from <= cut_at
    assert resumed.offset == len(data)
    stored = asyncio.run(read_blob(s3_store, sha256_hex(data)))
    assert sha256_hex(stored) == sha256_hex(data)


def _offset(upload_url: str, headers: dict[str, str]) -> int:
    response = httpx.head(upload_url, headers={**headers, "Tus-Resumable": "1.0.0"}, timeout=30)
    assert response.status_code == 200, response.text
    return int(response.headers["upload-offset"])

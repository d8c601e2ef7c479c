"""What only the S3 store does: signatures, presigned URLs for devices, outages."""

from __future__ import annotations

import asyncio
import io
import socket
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from minio import Minio
from minio.error import S3Error

from server.blobstores import S3Options, open_blob_store
from server.blobstores.s3 import S3BlobStore, S3RequestFailed
from sync.blobs import BlobStoreUnavailable
from tests.fixtures.s3 import S3Server
from tests.integration.blobstore.helpers import chunked, s3_options, sha256_hex, unique_bucket


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def s3_store(s3_server: S3Server) -> S3BlobStore:
    store = S3BlobStore(unique_bucket(), s3_options(s3_server))
    await store.ensure_ready()
    return store


def test_the_test_server_checks_signatures(s3_server: S3Server) -> None:
    bucket = unique_bucket()
    good = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        region=s3_server.region,
    )
    good.make_bucket(bucket)
    good.put_object(bucket, "note.txt", io.BytesIO(b"hello"), 5)
    wrong_secret = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key + "x",
        secure=False,
        region=s3_server.region,
    )

    with pytest.raises(S3Error) as refused:
        wrong_secret.put_object(bucket, "forged.txt", io.BytesIO(b"forged"), 6)
    assert refused.value.code in {"SignatureDoesNotMatch", "AccessDenied"}
    with pytest.raises(S3Error):
        wrong_secret.get_object(bucket, "note.txt")
    anonymous = httpx.get(f"http://{s3_server.endpoint}/{bucket}/note.txt")
    assert anonymous.status_code == 403
    assert [obj.object_name for obj in good.list_objects(bucket)] == ["note.txt"]


async def test_presigned_url_fetches_the_bytes_with_a_plain_get(s3_store: S3BlobStore) -> None:
    data = b"\xff\xd8 jpeg bytes of an establishment photo"
    await s3_store.put(sha256_hex(data), chunked(data), content_type="image/jpeg")

    url = await s3_store.presigned_get_url(
        sha256_hex(data), expires=timedelta(minutes=5), filename="ảnh cơ sở.jpg"
    )

    assert url is not None
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/jpeg"
    assert "attachment" in response.headers["content-disposition"]


async def test_presigned_url_is_signed_for_the_public_endpoint(s3_server: S3Server) -> None:
    # Devices reach the same server under another name; the signature must cover that name.
    public = f"localhost:{s3_server.port}"
    store = S3BlobStore(unique_bucket(), s3_options(s3_server, public_endpoint=public))
    await store.ensure_ready()
    data = b"signed for the host devices see"
    await store.put(sha256_hex(data), chunked(data))

    url = await store.presigned_get_url(sha256_hex(data), expires=timedelta(minutes=5))

    assert url is not None
    parts = urlsplit(url)
    assert parts.netloc == public
    internal_url = urlunsplit(parts._replace(netloc=s3_server.endpoint))
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).content == data
        assert (await client.get(internal_url)).status_code == 403


async def test_presigned_url_stops_working_after_it_expires(s3_store: S3BlobStore) -> None:
    data = b"short-lived"
    await s3_store.put(sha256_hex(data), chunked(data))

    url = await s3_store.presigned_get_url(sha256_hex(data), expires=timedelta(seconds=3))
    assert url is not None
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 200
        await asyncio.sleep(4.5)
        expired = await client.get(url)

    assert expired.status_code == 403


async def test_signing_needs_no_network() -> None:
    options = S3Options(
        endpoint=f"127.0.0.1:{closed_port()}",
        public_endpoint="https://files.example.org",
        access_key="key",
        secret_key="secret",
    )
    store = S3BlobStore("fieldsync", options)

    url = await store.presigned_get_url("a" * 64, expires=timedelta(minutes=1))

    assert url is not None
    assert url.startswith("https://files.example.org/fieldsync/blobs/" + "a" * 64 + "?")


async def test_check_reports_unavailable_when_nothing_listens(s3_server: S3Server) -> None:
    store = open_blob_store(
        "s3://fieldsync", s3=s3_options(s3_server, endpoint=f"127.0.0.1:{closed_port()}")
    )

    with pytest.raises(BlobStoreUnavailable) as caught:
        await store.check()
    assert caught.value.code == "blob_store_unavailable"
    with pytest.raises(BlobStoreUnavailable):
        await store.ensure_ready()
    with pytest.raises(BlobStoreUnavailable):
        await store.put(sha256_hex(b"x"), chunked(b"x"))


async def test_check_reports_unavailable_with_a_wrong_secret(s3_server: S3Server) -> None:
    store = S3BlobStore(unique_bucket(), s3_options(s3_server))
    await store.ensure_ready()
    forged = S3BlobStore(store.bucket, s3_options(s3_server, secret_key="not-the-secret"))

    await store.check()
    with pytest.raises(BlobStoreUnavailable):
        await forged.check()


async def test_check_reports_unavailable_when_the_bucket_is_missing(s3_server: S3Server) -> None:
    store = S3BlobStore(unique_bucket(), s3_options(s3_server))

    with pytest.raises(BlobStoreUnavailable):
        await store.check()
    await store.ensure_ready()
    await store.ensure_ready()  # idempotent at every start-up
    await store.check()


class DroppingProxy:
    """A TCP relay to the S3 server that can close every connection it carries, as an S3 server
    closes kept-alive connections it found idle."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def drop_all(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers = []

    async def stop(self) -> None:
        self.drop_all()
        if self.server is not None:
            self.server.close()


async def test_put_bytes_reuses_its_connection_and_survives_one_the_server_closed(
    s3_server: S3Server,
) -> None:
    proxy = DroppingProxy(s3_server.endpoint)
    endpoint = await proxy.start()
    try:
        store = S3BlobStore(unique_bucket(), s3_options(s3_server, endpoint=endpoint))
        await store.ensure_ready()
        opened_by_sdk = proxy.accepted
        photos = [f"photo {n}".encode() * 1000 for n in range(3)]

        await store.put_bytes(sha256_hex(photos[0]), photos[0], content_type="image/jpeg")
        await store.put_bytes(sha256_hex(photos[1]), photos[1], content_type="image/jpeg")
        assert proxy.accepted == opened_by_sdk + 1  # one kept-alive connection for both
        proxy.drop_all()
        await asyncio.sleep(0.05)  # the close reaches the idle connection
        await store.put_bytes(sha256_hex(photos[2]), photos[2], content_type="image/jpeg")

        assert proxy.accepted == opened_by_sdk + 2
        for photo in photos:
            info = await store.stat(sha256_hex(photo))
            assert info is not None and (info.size, info.content_type) == (len(photo), "image/jpeg")
            assert b"".join([c async for c in await store.open(sha256_hex(photo))]) == photo
    finally:
        await proxy.stop()


async def test_put_bytes_with_a_wrong_secret_is_refused_with_s3s_code(
    s3_server: S3Server,
) -> None:
    store = S3BlobStore(unique_bucket(), s3_options(s3_server))
    await store.ensure_ready()
    forged = S3BlobStore(store.bucket, s3_options(s3_server, secret_key="not-the-secret"))
    data = b"a forged photo"

    with pytest.raises(S3RequestFailed) as refused:
        await forged.put_bytes(sha256_hex(data), data)
    assert refused.value.s3_code in {"SignatureDoesNotMatch", "AccessDenied"}
    assert await store.stat(sha256_hex(data)) is None


async def test_put_bytes_reports_unavailable_when_nothing_listens(s3_server: S3Server) -> None:
    store = S3BlobStore("fieldsync", s3_options(s3_server, endpoint=f"127.0.0.1:{closed_port()}"))

    with pytest.raises(BlobStoreUnavailable) as caught:
        await store.put_bytes(sha256_hex(b"x"), b"x")
    assert caught.value.code == "blob_store_unavailable"

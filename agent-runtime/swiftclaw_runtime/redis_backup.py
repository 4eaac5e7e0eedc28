"""Backups of the managed Redis's state instance to S3-compatible object storage.

``swiftclaw redis-backup`` pulls an RDB snapshot over the replication protocol (as
``redis-cli --rdb`` does: ``REPLCONF rdb-only``, then ``SYNC``; the server writes the
snapshot with a fork, as for any replica, then sends it), uploads it as
``<prefix>/redis-state-<UTC time>.rdb``, and deletes what the retention no longer keeps.
``swiftclaw redis-restore`` lays a snapshot out in a data folder before Redis starts:
as the base of a fresh append-only file (Redis with ``appendonly yes`` ignores a lone
``dump.rdb``), and as ``dump.rdb``.

The S3 credentials come from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``), the Redis password from the URL (itself from the environment,
never the command line: argv shows in ``ps`` and in the CronJob). A failure is a
:class:`BackupError` whose message says what failed and holds no credential, and leaves no
temporary file behind. ``boto3`` is imported only
here (the ``backup`` extra of the runtime image).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

OBJECT_PREFIX = "redis-state-"
STAMP = "%Y%m%dT%H%M%SZ"
AOF_DIR = "appendonlydir"
AOF_NAME = "appendonly.aof"


class BackupError(Exception):
    """The snapshot could not be taken, stored or restored (the message says why)."""


# --- pulling the snapshot -----------------------------------------------------------


def _command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        raw = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise BackupError("redis closed the connection during the transfer")
        self.buf += chunk

    def skip_newlines(self) -> None:
        while True:
            if not self.buf:
                self._fill()
            if self.buf[:1] != b"\n":
                return
            self.buf = self.buf[1:]

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exactly(self, n: int, out: Any) -> None:
        while n > 0:
            if not self.buf:
                self._fill()
            part, self.buf = self.buf[:n], self.buf[n:]
            out.write(part)
            n -= len(part)


def _reply(reader: _Reader, what: str) -> bytes:
    line = reader.line()
    if line.startswith(b"-"):
        raise BackupError(f"redis refused {what}: {line[1:].decode(errors='replace')}")
    return line


def pull_rdb(url: str, dest: Path, timeout: float = 600.0) -> int:
    """The server's dataset as an RDB file at ``dest`` (written whole or not at all: the
    partial file of a transfer that fails is removed)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    tmp = dest.with_name(dest.name + ".part")
    try:
        with _failing(f"pulling the snapshot from redis at {host}:{port}"):
            size = _pull(parts, host, port, tmp, timeout)
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def _pull(parts: SplitResult, host: str, port: int, tmp: Path, timeout: float) -> int:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        reader = _Reader(sock)
        if parts.password:
            user = [unquote(parts.username)] if parts.username else []
            sock.sendall(_command("AUTH", *user, unquote(parts.password)))
            _reply(reader, "AUTH")
        sock.sendall(_command("REPLCONF", "rdb-only", "1"))
        reader.line()  # an error here (an older Redis) only means a full replication stream
        sock.sendall(_command("SYNC"))
        reader.skip_newlines()  # sent by the server while it prepares the snapshot
        header = _reply(reader, "SYNC")
        # "$<length>": without "REPLCONF capa eof" the server sends the snapshot it wrote
        # to disk, with its length first (never the diskless "$EOF:<mark>" form).
        if not header[1:].isdigit() or not header.startswith(b"$"):
            raise BackupError(f"unexpected reply to SYNC: {header[:60]!r}")
        with open(tmp, "wb") as out:
            reader.exactly(int(header[1:]), out)
    with open(tmp, "rb") as f:
        if f.read(5) != b"REDIS":
            raise BackupError("the snapshot is not an RDB file")
    return tmp.stat().st_size


# --- errors ---------------------------------------------------------------------------

_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")


def redact(text: str, *secrets: str) -> str:
    """``text`` without credentials: a URL's user and password, the S3 keys of the
    environment, and ``secrets``."""
    text = _USERINFO.sub("***@", text)
    for secret in (*secrets, *(os.environ.get(n, "") for n in _SECRET_ENV)):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def reason(err: BaseException) -> str:
    """What went wrong, in a line: an S3 error's code and message, else the error."""
    response = getattr(err, "response", None)  # botocore's ClientError
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        e = response["Error"]
        return redact(f"{e.get('Code', type(err).__name__)}: {e.get('Message', '')}".strip())
    return redact(f"{type(err).__name__}: {err}")


@contextmanager
def _failing(what: str) -> Iterator[None]:
    """Errors of the network, the disk and the S3 client as a :class:`BackupError` saying
    what failed (never a traceback, never a credential)."""
    try:
        yield
    except BackupError:
        raise
    except Exception as err:
        if isinstance(err, OSError) or _from_boto(err):
            raise BackupError(f"{what} failed: {reason(err)}") from None
        raise


def _from_boto(err: BaseException) -> bool:
    """An error of botocore or boto3 (imported only with the ``backup`` extra)."""
    return type(err).__module__.split(".")[0] in ("botocore", "boto3", "s3transfer")


# --- object storage -------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """Where the snapshots go: a bucket, a key prefix, an endpoint (None: AWS)."""

    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str = "us-east-1"

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            # path-style: S3-compatible servers seldom serve bucket subdomains
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def key(self, at: datetime) -> str:
        return f"{self.prefix.strip('/')}/{OBJECT_PREFIX}{at.strftime(STAMP)}.rdb"

    def list(self, client: Any) -> list[str]:
        """Every snapshot's key, oldest first (the time in the name sorts them)."""
        keys: list[str] = []
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix.strip('/')}/{OBJECT_PREFIX}"
        )
        for page in pages:
            keys += [o["Key"] for o in page.get("Contents", [])]
        return sorted(k for k in keys if stamp_of(k) is not None)


def stamp_of(key: str) -> datetime | None:
    name = key.rsplit("/", 1)[-1]
    if not (name.startswith(OBJECT_PREFIX) and name.endswith(".rdb")):
        return None
    try:
        return datetime.strptime(name[len(OBJECT_PREFIX) : -4], STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def expired(keys: Iterable[str], keep: int, max_age_days: int | None, now: datetime) -> list[str]:
    """What retention deletes: all but the newest ``keep``, and those older than
    ``max_age_days``; never the newest (a backup that stopped must not take the last one).
    Keys that are not snapshots are left alone."""
    dated = [(at, key) for key in keys if (at := stamp_of(key)) is not None]
    out = []
    for i, (at, key) in enumerate(sorted(dated, reverse=True)):
        too_old = max_age_days is not None and now - at > timedelta(days=max_age_days)
        if i > 0 and (i >= keep or too_old):
            out.append(key)
    return out


def backup(url: str, store: Store, keep: int, max_age_days: int | None, work: Path) -> str:
    """Snapshot, upload, apply retention; the uploaded key."""
    with _failing("setting up the S3 client"):
        client = store.client()
    now = datetime.now(UTC)
    with _failing(f"making the work folder {work}"):
        work.mkdir(parents=True, exist_ok=True)
    path = work / "redis-state.rdb"
    started = time.monotonic()
    key = store.key(now)
    try:
        size = pull_rdb(url, path)
        with _failing(f"uploading s3://{store.bucket}/{key}"):
            client.upload_file(str(path), store.bucket, key)
    finally:
        path.unlink(missing_ok=True)
    with _failing(f"applying the retention under s3://{store.bucket}/{store.prefix}"):
        gone = expired(store.list(client), keep, max_age_days, now)
        for old in gone:
            client.delete_object(Bucket=store.bucket, Key=old)
    print(
        f"redis-backup: s3://{store.bucket}/{key}: {size} bytes in "
        f"{time.monotonic() - started:.1f}s; {len(gone)} old snapshot(s) deleted",
        flush=True,
    )
    return key


# --- restoring ------------------------------------------------------------------------


def lay_out(rdb: Path, data_dir: Path) -> None:
    """Make ``rdb`` the dataset Redis loads from ``data_dir`` on start, with or without
    append-only persistence: the base of a fresh AOF (manifest + base file) and dump.rdb."""
    aof = data_dir / AOF_DIR
    if aof.exists():
        shutil.rmtree(aof)
    staged = data_dir / f"{AOF_DIR}.restore"
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    base = f"{AOF_NAME}.1.base.rdb"
    shutil.copyfile(rdb, staged / base)
    (staged / f"{AOF_NAME}.manifest").write_text(f"file {base} seq 1 type b\n")
    shutil.copyfile(rdb, data_dir / "dump.rdb.restore")
    os.replace(data_dir / "dump.rdb.restore", data_dir / "dump.rdb")
    os.replace(staged, aof)


def restore(store: Store, key: str | None, data_dir: Path, overwrite: bool) -> str:
    """Fetch snapshot ``key`` (None: the newest) into ``data_dir``; the key restored."""
    if not overwrite and any((data_dir / n).exists() for n in ("dump.rdb", AOF_DIR)):
        raise BackupError(f"{data_dir} already holds Redis data: pass --overwrite to replace it")
    with _failing("setting up the S3 client"):
        client = store.client()
    if key is None:
        with _failing(f"listing s3://{store.bucket}/{store.prefix}"):
            keys = store.list(client)
        if not keys:
            raise BackupError(f"no snapshot under s3://{store.bucket}/{store.prefix}")
        key = keys[-1]
    fetched = data_dir / "restore.rdb.part"
    try:
        with _failing(f"downloading s3://{store.bucket}/{key}"):
            data_dir.mkdir(parents=True, exist_ok=True)
            client.download_file(store.bucket, key, str(fetched))
        with open(fetched, "rb") as f:
            if f.read(5) != b"REDIS":
                raise BackupError(f"s3://{store.bucket}/{key} is not an RDB file")
        with _failing(f"laying the snapshot out in {data_dir}"):
            lay_out(fetched, data_dir)
    finally:
        fetched.unlink(missing_ok=True)
    print(f"redis-restore: s3://{store.bucket}/{key} laid out in {data_dir}", flush=True)
    return key

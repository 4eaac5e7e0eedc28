"""Backups of the managed Redis's state instance to a real S3-compatible server (SeaweedFS
on loopback, built by ``make control-plane``), and the restore, with the CLI the backup
CronJob and the runbook's restore Job run: ``swiftclaw redis-backup`` / ``redis-restore``.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from e2e.seaweedfs import SeaweedS3, seaweed_s3

from swiftclaw_devtools.processes import Proc, free_port, swiftclaw
from swiftclaw_runtime import contract
from swiftclaw_runtime.redis_backup import STAMP, BackupError, Store, expired, pull_rdb, restore

from .test_managed_redis import PASSWORD, managed_agent, start_instance

BUCKET = "redis-backups"
PREFIX = "tests/agent"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs"), (BUCKET,)) as server:
        yield server


def cli(
    s3: SeaweedS3,
    *args: str,
    redis_url: str | None = None,
    bucket: str = BUCKET,
    endpoint: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The CLI as the pods run it: the Redis URL and the credentials from the environment,
    the S3 flags."""
    flags = ["--bucket", bucket, "--prefix", PREFIX, "--endpoint", endpoint or s3.endpoint]
    full = {**os.environ, **s3.env(), **(env or {})}
    full.pop(contract.REDIS_STATE_URL_ENV, None)
    if redis_url is not None:
        full[contract.REDIS_STATE_URL_ENV] = redis_url
    return subprocess.run(
        swiftclaw(args[0], *flags, *args[1:]), env=full, capture_output=True, text=True, timeout=60
    )


def url(p: Proc, password: str = PASSWORD) -> str:
    return f"redis://:{password}@127.0.0.1:{p.port}/0"


def key_at(at: datetime) -> str:
    return f"{PREFIX}/redis-state-{at.strftime(STAMP)}.rdb"


def test_retention_keeps_the_newest_and_never_the_last_one() -> None:
    now = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    keys = [key_at(now - timedelta(days=d)) for d in range(10)]
    assert expired(keys, 3, None, now) == keys[3:]
    assert expired(keys, 30, 4, now) == keys[5:]  # older than 4 days
    assert expired(keys[5:], 30, 4, now) == keys[6:]  # all old: the newest stays
    assert expired(["tests/agent/other.rdb", *keys[:2]], 1, None, now) == [keys[1]]


def test_backup_uploads_applies_retention_and_restore_brings_the_data_back(
    s3: SeaweedS3, tmp_path: Path
) -> None:
    agent = managed_agent()
    state = start_instance(agent, "state", tmp_path)
    try:
        r = redis.Redis(port=state.port, password=PASSWORD)
        counters = {f"sc:{{tests/agent}}:spend:user-{i}": str(i * 7) for i in range(500)}
        r.mset(counters)
        # Two snapshots of earlier days, and one older than the retention's 30 days.
        client = s3.client()
        now = datetime.now(UTC)
        old = [key_at(now - timedelta(days=d)) for d in (40, 2, 1)]
        for k in old:
            client.put_object(Bucket=BUCKET, Key=k, Body=b"REDIS0011")

        done = cli(s3, "redis-backup", "--keep", "3", redis_url=url(state))
        assert done.returncode == 0, done.stderr
        assert "redis-backup: s3://redis-backups/tests/agent/redis-state-" in done.stdout
        keys = s3.keys(BUCKET, PREFIX)
        assert len(keys) == 3 and old[0] not in keys  # the oldest went (keep 3)
        newest = keys[-1]
        body = client.get_object(Bucket=BUCKET, Key=newest)["Body"].read()
        assert body.startswith(b"REDIS") and len(body) > 500 * 10
        done = cli(s3, "redis-backup", "--max-age-days", "30", redis_url=url(state))
        assert done.returncode == 0, done.stderr

        # A client without the password gets no snapshot.
        work = tmp_path / "work"
        refused = cli(
            s3, "redis-backup", "--work-dir", str(work), redis_url=url(state, "wrong-pass")
        )
        assert refused.returncode == 1 and "redis refused AUTH" in refused.stderr
        assert "wrong-pass" not in refused.stderr and list(work.iterdir()) == []
    finally:
        state.stop()

    # The disaster: the volume is gone. The restore lays the newest snapshot out in a new
    # one, and Redis, started with the StatefulSet's arguments, serves the data again.
    data = tmp_path / "state"
    for f in sorted(data.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    done = cli(s3, "redis-restore", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    again = cli(s3, "redis-restore", "--data-dir", str(data))
    assert again.returncode == 1 and "--overwrite" in again.stderr  # data there: refused
    state = start_instance(agent, "state", tmp_path)
    try:
        r = redis.Redis(port=state.port, password=PASSWORD, decode_responses=True)
        assert r.mget(list(counters)) == list(counters.values())
        r.set("after-restore", "1")  # appended to the fresh append-only file
    finally:
        state.stop()
    state = start_instance(agent, "state", tmp_path)
    try:
        r = redis.Redis(port=state.port, password=PASSWORD, decode_responses=True)
        assert r.get("after-restore") == "1" and r.dbsize() == len(counters) + 1
    finally:
        state.stop()


def test_restore_of_a_named_snapshot_and_a_missing_one(s3: SeaweedS3, tmp_path: Path) -> None:
    client = s3.client()
    key = key_at(datetime(2026, 1, 1, tzinfo=UTC))
    client.put_object(Bucket=BUCKET, Key=key, Body=b"not an rdb")
    bad = cli(s3, "redis-restore", "--data-dir", str(tmp_path / "a"), "--key", key)
    assert bad.returncode == 1 and "is not an RDB file" in bad.stderr
    assert not (tmp_path / "a" / "dump.rdb").exists()
    client.delete_object(Bucket=BUCKET, Key=key)
    flags = ["--bucket", BUCKET, "--prefix", "nothing/here", "--endpoint", s3.endpoint]
    missing = subprocess.run(
        swiftclaw("redis-restore", *flags, "--data-dir", str(tmp_path / "b")),
        env={**os.environ, **s3.env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "no snapshot under" in missing.stderr


def test_the_redis_url_comes_only_from_the_environment(s3: SeaweedS3, tmp_path: Path) -> None:
    """A password on the command line shows in ps and in the CronJob: the flag is refused,
    without echoing its value; without the environment variable, the error names it."""
    secret_url = "redis://:hunter2-secret@127.0.0.1:1/0"
    flagged = cli(s3, "redis-backup", "--redis-url", secret_url)
    assert flagged.returncode == 2 and contract.REDIS_STATE_URL_ENV in flagged.stderr
    assert "hunter2" not in flagged.stderr + flagged.stdout
    unset = cli(s3, "redis-backup")
    assert unset.returncode == 2 and f"${contract.REDIS_STATE_URL_ENV}" in unset.stderr


class CuttingProxy:
    """A TCP relay to a real Redis that cuts the connection once ``limit`` bytes of the
    server's answer went through: a transfer that breaks off half-way."""

    def __init__(self, target_port: int, limit: int) -> None:
        self.target_port, self.limit = target_port, limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        sent = 0
        with client, upstream:
            while sent < self.limit:
                ready, _, _ = select.select([client, upstream], [], [], 10)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is upstream:
                        data = data[: self.limit - sent]
                        sent += len(data)
                        client.sendall(data)
                    else:
                        upstream.sendall(data)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


def test_a_transfer_cut_half_way_leaves_no_file(tmp_path: Path) -> None:
    agent = managed_agent()
    state = start_instance(agent, "state", tmp_path)
    try:
        r = redis.Redis(port=state.port, password=PASSWORD)
        r.mset({f"k{i}": os.urandom(64).hex() for i in range(2000)})  # an RDB of ~250 KB
        whole = tmp_path / "whole.rdb"
        assert pull_rdb(url(state), whole) > 200_000
        proxy = CuttingProxy(state.port, 100_000)
        try:
            dest = tmp_path / "out" / "redis-state.rdb"
            dest.parent.mkdir()
            with pytest.raises(BackupError, match="closed the connection during the transfer"):
                pull_rdb(f"redis://:{PASSWORD}@127.0.0.1:{proxy.port}/0", dest, timeout=10)
        finally:
            proxy.close()
    finally:
        state.stop()
    assert list((tmp_path / "out").iterdir()) == []


def test_storage_failures_are_one_clear_line_and_leave_no_file(
    s3: SeaweedS3, tmp_path: Path
) -> None:
    """Credentials the storage refuses, an endpoint nobody listens on, a restore that cannot be
    laid out: exit 1 with what failed, no traceback, no credential, no temporary file."""
    agent = managed_agent()
    state = start_instance(agent, "state", tmp_path)
    work = tmp_path / "work"
    try:
        redis.Redis(port=state.port, password=PASSWORD).set("k", "v")
        wrong_secret = "wrong-secret-0123456789abcdef"
        refused = cli(
            s3,
            "redis-backup",
            "--work-dir",
            str(work),
            redis_url=url(state),
            env={"AWS_SECRET_ACCESS_KEY": wrong_secret},
        )
        closed = f"http://127.0.0.1:{free_port()}"
        unreachable = cli(
            s3, "redis-backup", "--work-dir", str(work), redis_url=url(state), endpoint=closed
        )
    finally:
        state.stop()
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith("redis-backup: uploading s3://redis-backups/tests/agent/")
    assert unreachable.returncode == 1, unreachable.stderr
    assert unreachable.stderr.startswith("redis-backup: uploading s3://"), unreachable.stderr
    for done in (refused, unreachable):
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
        for secret in (PASSWORD, wrong_secret, *s3.env().values()):
            assert secret not in done.stderr
    assert list(work.iterdir()) == []

    # a snapshot downloaded that cannot be laid out (a folder in the way of dump.rdb's
    # staging): the downloaded file goes too
    client = s3.client()
    key = key_at(datetime(2026, 2, 2, tzinfo=UTC))
    client.put_object(Bucket=BUCKET, Key=key, Body=b"REDIS0011 not really")
    data = tmp_path / "data"
    (data / "dump.rdb.restore").mkdir(parents=True)
    blocked = cli(s3, "redis-restore", "--data-dir", str(data), "--key", key, "--overwrite")
    client.delete_object(Bucket=BUCKET, Key=key)
    assert blocked.returncode == 1 and "Traceback" not in blocked.stderr, blocked.stderr
    assert blocked.stderr.startswith(f"redis-restore: laying the snapshot out in {data} failed")
    assert not (data / "restore.rdb.part").exists() and not (data / "dump.rdb").exists()
    missing = cli(s3, "redis-restore", "--data-dir", str(data), "--key", "tests/agent/none.rdb")
    assert missing.returncode == 1 and "downloading s3://" in missing.stderr, missing.stderr
    assert not (data / "restore.rdb.part").exists()
    store = Store(BUCKET, PREFIX, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BackupError, match="listing s3://"):
        restore(store, None, tmp_path / "other", overwrite=False)

"""Backups of the managed Redis's state instance to a real S3-compatible server (SeaweedFS
on loopback, built by ``make control-plane``), and the restore, with the CLI the backup
CronJob and the runbook's restore Job run: ``swiftclaw redis-backup`` / ``redis-restore``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from e2e.seaweedfs import SeaweedS3, seaweed_s3

from swiftclaw_devtools.processes import Proc, swiftclaw
from swiftclaw_runtime.redis_backup import STAMP, expired

from .test_managed_redis import PASSWORD, managed_agent, start_instance

BUCKET = "redis-backups"
PREFIX = "tests/agent"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs"), (BUCKET,)) as server:
        yield server


def cli(s3: SeaweedS3, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as the pods run it: credentials from the environment, the S3 flags."""
    flags = ["--bucket", BUCKET, "--prefix", PREFIX, "--endpoint", s3.endpoint]
    env = {**os.environ, **s3.env()}
    return subprocess.run(
        swiftclaw(args[0], *flags, *args[1:]), env=env, capture_output=True, text=True, timeout=60
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

        done = cli(s3, "redis-backup", "--redis-url", url(state), "--keep", "3")
        assert done.returncode == 0, done.stderr
        assert "redis-backup: s3://redis-backups/tests/agent/redis-state-" in done.stdout
        keys = s3.keys(BUCKET, PREFIX)
        assert len(keys) == 3 and old[0] not in keys  # the oldest went (keep 3)
        newest = keys[-1]
        body = client.get_object(Bucket=BUCKET, Key=newest)["Body"].read()
        assert body.startswith(b"REDIS") and len(body) > 500 * 10
        done = cli(s3, "redis-backup", "--redis-url", url(state), "--max-age-days", "30")
        assert done.returncode == 0, done.stderr

        # A client without the password gets no snapshot.
        refused = cli(s3, "redis-backup", "--redis-url", url(state, "wrong"))
        assert refused.returncode == 1 and "redis refused AUTH" in refused.stderr
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

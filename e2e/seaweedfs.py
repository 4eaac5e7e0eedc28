"""A real S3-compatible server on loopback for the Redis backup tests: SeaweedFS
(Apache-2.0), ``weed server -s3`` built from Go modules by ``e2e/cluster/build-tools.sh``.

Every port is a free one on 127.0.0.1 (no default port, so runs side by side do not
clash); one identity with the keys below; stopped by pid, its folder left to the caller's
tmp dir.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftclaw_devtools.processes import Proc, free_port, start

from .cluster import CLUSTER_DIR

ACCESS_KEY = "swiftclaw-backup"
SECRET_KEY = "swiftclaw-backup-secret-0123456789"
REGION = "us-east-1"


def weed_path() -> Path:
    """The built ``weed`` (``make control-plane`` builds it; this never does: minutes)."""
    proc = subprocess.run(
        [str(CLUSTER_DIR / "build-tools.sh"), "--check-seaweedfs"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip())
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass
class SeaweedS3:
    proc: Proc
    endpoint: str

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for o in out.get("Contents", []))

    def env(self) -> dict[str, str]:
        """The credentials as ``swiftclaw redis-backup`` reads them."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


def _ports(*names: str) -> dict[str, int]:
    return {n: free_port() for n in names}


@contextmanager
def seaweed_s3(folder: Path, buckets: tuple[str, ...] = ()) -> Iterator[SeaweedS3]:
    """``weed server`` with master, volume, filer and S3 gateway, on 127.0.0.1 only."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "backup",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    p = _ports("master", "master.g", "volume", "volume.g", "filer", "filer.g", "s3", "s3.g")
    data = folder / "data"
    data.mkdir(exist_ok=True)
    argv = [
        str(weed_path()),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        f"-master.port={p['master']}",
        f"-master.port.grpc={p['master.g']}",
        "-master.volumeSizeLimitMB=64",
        "-master.telemetry=false",  # it would report to a server on the internet
        f"-volume.port={p['volume']}",
        f"-volume.port.grpc={p['volume.g']}",
        "-volume.max=8",
        "-filer",
        f"-filer.port={p['filer']}",
        f"-filer.port.grpc={p['filer.g']}",
        f"-filer.localSocket={folder / 'filer.sock'}",
        "-s3",
        f"-s3.port={p['s3']}",
        f"-s3.port.grpc={p['s3.g']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={folder / 's3.sock'}",
        f"-s3.config={config}",
    ]
    proc = start(argv, p["s3"], None, folder / "weed.log", timeout=120)
    s3 = SeaweedS3(proc, f"http://127.0.0.1:{p['s3']}")
    try:
        _ready(s3, buckets)
        yield s3
    finally:
        proc.stop(timeout=5)  # nothing to keep: SIGKILL if it lingers


def _ready(s3: SeaweedS3, buckets: tuple[str, ...], timeout: float = 120.0) -> None:
    """The gateway listens before the filer and a volume are up: wait until a bucket can
    be made and written to."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client = s3.client()
            for b in buckets:
                existing = {x["Name"] for x in client.list_buckets().get("Buckets", [])}
                if b not in existing:
                    client.create_bucket(Bucket=b)
                client.put_object(Bucket=b, Key=".ready", Body=b"ok")
                client.delete_object(Bucket=b, Key=".ready")
            if not buckets:
                client.list_buckets()
            return
        except Exception as err:  # not up yet: any failure of the probe means wait
            last = err
            time.sleep(0.5)
    raise RuntimeError(f"SeaweedFS S3 at {s3.endpoint} not ready in {timeout:.0f}s: {last}")

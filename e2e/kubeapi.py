"""A small HTTPS client of the Kubernetes API for the pod runner and the test balancer.

kubectl costs a process (and a tenth of a second of CPU) per call; the runner patches pod
status and watches objects all the time, so it speaks to the API server itself with the
kubeconfig's client certificate. Every address it dials is recorded in :data:`DIALED`, so
that a test can check that the suite only ever connected to loopback.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import socket
import ssl
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("e2e.kubeapi")

DIALED: set[tuple[str, int]] = set()
"""Every (host, port) the e2e helpers (API client, runner, balancer) have connected to."""
_dialed_lock = threading.Lock()


def record_dial(host: str, port: int) -> None:
    with _dialed_lock:
        DIALED.add((host, port))


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


class KubeAPI:
    """The API server of a kubeconfig's current context (client certificate or token)."""

    def __init__(self, kubeconfig: Path) -> None:
        doc = yaml.safe_load(kubeconfig.read_text())
        ctx_name = doc.get("current-context") or doc["contexts"][0]["name"]
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        server = urllib.parse.urlsplit(cluster["server"])
        self.host = server.hostname or "127.0.0.1"
        self.port = server.port or 443
        self._files = tempfile.TemporaryDirectory(prefix="kubeapi-")
        self.ssl = ssl.create_default_context(cafile=self._file(cluster, "certificate-authority"))
        if cluster.get("insecure-skip-tls-verify"):
            self.ssl.check_hostname = False
            self.ssl.verify_mode = ssl.CERT_NONE
        cert = self._file(user, "client-certificate")
        if cert:
            self.ssl.load_cert_chain(cert, self._file(user, "client-key"))
        self.token: str | None = user.get("token")
        self._local = threading.local()

    def _file(self, section: dict[str, Any], key: str) -> str | None:
        if section.get(key):
            return str(section[key])
        data = section.get(f"{key}-data")
        if not data:
            return None
        path = Path(self._files.name) / key
        path.write_bytes(base64.b64decode(data))
        return str(path)

    def _connect(self, timeout: float | None) -> http.client.HTTPSConnection:
        record_dial(self.host, self.port)
        return http.client.HTTPSConnection(self.host, self.port, context=self.ssl, timeout=timeout)

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        **query: str,
    ) -> Any:
        """One call; the JSON answer, None on 404 for GET, :class:`ApiError` otherwise."""
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        payload = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):  # a kept-alive connection the server closed: retry once
            conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connect(30)
            try:
                conn.request(method, url, payload, self._headers(content_type if body else None))
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                continue
            break
        if resp.status == 404 and method == "GET":
            return None
        if resp.status >= 300:
            raise ApiError(resp.status, data.decode(errors="replace"))
        return json.loads(data) if data else None

    def get(self, path: str, **query: str) -> Any:
        return self.request("GET", path, **query)

    def patch_status(self, path: str, status: dict[str, Any]) -> Any:
        return self.request(
            "PATCH", f"{path}/status", {"status": status}, "application/merge-patch+json"
        )

    def open_watch(
        self, path: str, resource_version: str, timeout_seconds: int, **query: str
    ) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
        """Start a watch request; read its events with :func:`watch_events`."""
        query = {
            **query,
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        conn = self._connect(timeout_seconds + 15)
        conn.request("GET", path + "?" + urllib.parse.urlencode(query), None, self._headers())
        resp = conn.getresponse()
        if resp.status != 200:
            body = resp.read().decode(errors="replace")
            conn.close()
            raise ApiError(resp.status, body)
        return conn, resp


def watch_events(resp: http.client.HTTPResponse) -> Iterator[tuple[str, dict[str, Any]]]:
    while True:
        line = resp.readline()
        if not line:
            return
        event = json.loads(line)
        yield event["type"], event["object"]


class Informer(threading.Thread):
    """Lists, then watches, a collection and calls ``on_event(type, object)`` for each change.

    After a relist, objects that vanished meanwhile are reported as DELETED. ``stop``
    closes the watch connection, so the thread ends at once.
    """

    def __init__(
        self,
        api: KubeAPI,
        path: str,
        on_event: Callable[[str, dict[str, Any]], None],
        **query: str,
    ) -> None:
        super().__init__(name=f"informer {path}", daemon=True)
        self.api, self.path, self.on_event, self.query = api, path, on_event, query
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self._stopped = threading.Event()
        self._conn: http.client.HTTPSConnection | None = None

    def stop(self) -> None:
        self._stopped.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        self.join(5)

    def _emit(self, type_: str, obj: dict[str, Any]) -> None:
        if self._stopped.is_set():
            return
        uid = obj["metadata"]["uid"]
        if type_ == "DELETED":
            self.objects.pop(uid, None)
        else:
            self.objects[uid] = obj
        try:
            self.on_event(type_, obj)
        except Exception:
            log.exception("%s: handling %s of %s failed", self.path, type_, obj["metadata"]["name"])

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                listing = self.api.get(self.path, **self.query)
                rv = listing["metadata"]["resourceVersion"]
                current = {o["metadata"]["uid"]: o for o in listing["items"]}
                for uid, obj in list(self.objects.items()):
                    if uid not in current:
                        self._emit("DELETED", obj)
                for uid, obj in current.items():
                    self._emit("MODIFIED" if uid in self.objects else "ADDED", obj)
                self.synced.set()
                while not self._stopped.is_set():
                    self._conn, resp = self.api.open_watch(self.path, rv, 60, **self.query)
                    try:
                        for type_, obj in watch_events(resp):
                            if type_ == "ERROR":
                                raise ApiError(int(obj.get("code", 500)), str(obj))
                            rv = obj["metadata"]["resourceVersion"]
                            if type_ != "BOOKMARK":
                                self._emit(type_, obj)
                    finally:
                        self._conn.close()
            except Exception as err:
                if not self._stopped.is_set():
                    log.info("%s: watch ended (%s); listing again", self.path, err)
                    self._stopped.wait(0.5)


def pod_ready(pod: dict[str, Any]) -> bool:
    """Ready and not terminating: what an EndpointSlice calls ``ready``."""
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )

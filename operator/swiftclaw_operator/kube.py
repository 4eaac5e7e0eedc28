"""A thin Kubernetes API client: the few calls the operator makes, each one counted.

Why not a generated client: the operator needs GET, LIST, server-side apply, a status
patch, DELETE and events for a fixed set of kinds. Doing them directly keeps every
request visible (the ``swiftclaw_operator_api_requests_total`` metric) and the process small.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import yaml

from .metrics import API_REQUESTS
from .resources.registry import plural

FIELD_MANAGER = "swiftclaw-operator"
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(Exception):
    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to authenticate; file paths, never logged."""

    server: str
    ca_path: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    token: str | None = None
    insecure: bool = False

    @classmethod
    def load(cls) -> Credentials:
        """In cluster: the service account. Otherwise: $KUBECONFIG's current context."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        if host and (SA_DIR / "token").exists() and not os.environ.get("KUBECONFIG"):
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            return cls(
                f"https://{host}:{port}",
                str(SA_DIR / "ca.crt"),
                token=(SA_DIR / "token").read_text().strip(),
            )
        path = os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
        return cls.from_kubeconfig(Path(path.split(os.pathsep)[0]))

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Credentials:
        cfg = yaml.safe_load(path.read_text())
        ctx_name = cfg.get("current-context")
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user: dict[str, Any] = next(
            (u["user"] for u in cfg.get("users", []) if u["name"] == ctx.get("user")), {}
        )

        def file_of(entry: Mapping[str, Any], key: str) -> str | None:
            if entry.get(key):
                return str(entry[key])
            data = entry.get(f"{key}-data")
            if not data:
                return None
            fd, name = tempfile.mkstemp(prefix="swiftclaw-kube-")
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(data))
            return name

        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = Path(user["tokenFile"]).read_text().strip()
        return cls(
            server=cluster["server"].rstrip("/"),
            ca_path=file_of(cluster, "certificate-authority"),
            cert_path=file_of(user, "client-certificate"),
            key_path=file_of(user, "client-key"),
            token=token,
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
        )

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_path)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_path and self.key_path:
            ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx


def path_of(
    api_version: str,
    kind: str,
    namespace: str | None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    out = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural(kind)}"
    if name:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


class Kube:
    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self._session: aiohttp.ClientSession | None = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"accept": "application/json"}
            if self.creds.token:
                headers["authorization"] = f"Bearer {self.creds.token}"
            self._session = aiohttp.ClientSession(
                base_url=self.creds.server,
                headers=headers,
                connector=aiohttp.TCPConnector(ssl=self.creds.ssl_context(), limit=64),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._session

    async def _call(
        self,
        verb: str,
        kind: str,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Any:
        API_REQUESTS.labels(verb, kind).inc()
        data = orjson.dumps(body) if body is not None else None
        url = path + ("?" + urlencode(params) if params else "")
        async with self._sess().request(
            method, url, data=data, headers={"content-type": content_type}
        ) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                try:
                    err = orjson.loads(raw)
                    raise KubeError(resp.status, err.get("message", ""), err.get("reason", ""))
                except orjson.JSONDecodeError:
                    raise KubeError(resp.status, raw[:300].decode("utf-8", "replace")) from None
            return orjson.loads(raw) if raw else None

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            obj = await self._call("get", kind, "GET", path_of(api_version, kind, namespace, name))
        except KubeError as err:
            if err.status == 404:
                return None
            raise
        return dict(obj)

    async def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        obj = await self._call(
            "list", kind, "GET", path_of(api_version, kind, namespace), params=params
        )
        return list(obj["items"])

    async def apply(self, manifest: dict[str, Any], force: bool = True) -> dict[str, Any]:
        """Server-side apply under the operator's one field manager."""
        meta = manifest["metadata"]
        path = path_of(
            manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"]
        )
        params = {"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"}
        return dict(
            await self._call(
                "apply",
                manifest["kind"],
                "PATCH",
                path,
                manifest,
                "application/apply-patch+yaml",
                params,
            )
        )

    async def create(self, manifest: dict[str, Any]) -> bool:
        """Create an object that is never read back or updated: True if made, False if it
        existed already (409)."""
        meta = manifest["metadata"]
        path = path_of(manifest["apiVersion"], manifest["kind"], meta.get("namespace"))
        try:
            await self._call(
                "create",
                manifest["kind"],
                "POST",
                path,
                manifest,
                params={"fieldManager": FIELD_MANAGER},
            )
        except KubeError as err:
            if err.status == 409:
                return False
            raise
        return True

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        path = path_of(api_version, kind, namespace, name, "status")
        return dict(
            await self._call(
                "patch_status",
                kind,
                "PATCH",
                path,
                {"status": status},
                "application/merge-patch+json",
            )
        )

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        try:
            await self._call(
                "delete",
                kind,
                "DELETE",
                path_of(api_version, kind, namespace, name),
                {"propagationPolicy": "Background"},
            )
        except KubeError as err:
            if err.status == 404:
                return False
            raise
        return True

    async def create_event(self, event: dict[str, Any]) -> None:
        ns = event["metadata"]["namespace"]
        await self._call("create", "Event", "POST", path_of("v1", "Event", ns), event)

    async def has_group_version(self, group_version: str) -> bool:
        """Is an API group/version served (for optional CRDs such as monitoring.coreos.com)?"""
        try:
            await self._call("discovery", "-", "GET", f"/apis/{group_version}")
        except KubeError as err:
            if err.status == 404:
                return False
            raise
        return True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

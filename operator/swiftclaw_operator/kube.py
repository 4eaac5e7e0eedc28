"""Kubernetes API access: the official client's configuration loading, raw paths, each call counted.

Where the API server is and how to authenticate comes from ``kubernetes_asyncio``'s
loaders: a kubeconfig (client certificates, tokens, exec plugins, OIDC) or, in a pod, the
service account. Credentials stay fresh: an exec plugin's token is renewed before its
``expirationTimestamp``, the service-account token is re-read when its file changes (the
kubelet rotates it), and a 401 forces one renewal and one retry. kopf logs in from the
same :class:`Auth` (see ``handlers.login``).

Requests go by path through the client's REST layer: the operator needs GET, LIST,
server-side apply, a status patch, DELETE and events for a fixed set of kinds, and one
path per request keeps each visible (``swiftclaw_operator_api_requests_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import RESTClientObject
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader
from kubernetes_asyncio.config.kube_config import KubeConfigLoader, load_kube_config

from .metrics import API_ERRORS, API_REAUTHS, API_REQUESTS
from .resources.registry import plural

log = logging.getLogger("swiftclaw.operator.kube")

FIELD_MANAGER = "swiftclaw-operator"
REQUEST_TIMEOUT_SECONDS = 30
NOT_FOUND = frozenset({404})
# A watch ends by itself after this long (the server's timeoutSeconds), and is resumed from
# the last resourceVersion seen; reading it has no overall timeout, only this much silence.
WATCH_SECONDS = 290
WATCH_SILENCE_SECONDS = WATCH_SECONDS + 30
# Renew an expiring credential this long before it expires (at most a fifth of its life).
RENEW_AHEAD = datetime.timedelta(minutes=5)


class KubeError(Exception):
    """The API server refused a request (``status`` >= 400), or was not reached (0)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Login:
    """The current credentials, for kopf's own client; file paths, never logged."""

    server: str
    ca_path: str | None
    cert_path: str | None
    key_path: str | None
    scheme: str | None
    token: str | None
    insecure: bool
    expiration: datetime.datetime | None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def renew_at(obtained: datetime.datetime, expires: datetime.datetime) -> datetime.datetime:
    """When to renew a credential: ahead of expiry by 5 minutes, or a fifth of its life."""
    return expires - min(RENEW_AHEAD, (expires - obtained) / 5)


class Auth:
    """A loaded client configuration and the means to keep its credentials fresh."""

    def __init__(
        self,
        configuration: Configuration,
        loader: KubeConfigLoader | None = None,
        token_file: Path | None = None,
        tmpdir: str | None = None,
    ) -> None:
        self.configuration = configuration
        self._loader = loader
        self._token_file = token_file
        self._token_stamp: tuple[int, int, int] | None = None
        self._tmpdir = tmpdir
        self._lock = asyncio.Lock()
        self._renew_at: datetime.datetime | None = None
        self.expiration: datetime.datetime | None = None
        self.renewals = 0
        configuration.refresh_api_key_hook = self._before_request

    @classmethod
    async def load(
        cls, service_account_dir: Path, environ: Mapping[str, str] | None = None
    ) -> Auth:
        """$KUBECONFIG when set; else the service account when in a pod; else ~/.kube/config."""
        env = os.environ if environ is None else environ
        configuration = type.__call__(Configuration)  # not a copy of a process-wide default
        token_file = service_account_dir / "token"
        kubeconfig = env.get("KUBECONFIG")
        if not kubeconfig and env.get("KUBERNETES_SERVICE_HOST") and token_file.exists():
            InClusterConfigLoader(
                str(token_file),
                str(service_account_dir / "ca.crt"),
                try_refresh_token=False,  # ours re-reads on change, not once a minute
                environ=dict(env),
            ).load_and_set(configuration)
            auth = cls(configuration, token_file=token_file)
            auth._read_token_file()
            return auth
        # Inline certificate data becomes files (ssl needs paths) in a private folder,
        # removed by close().
        tmpdir = tempfile.mkdtemp(prefix="swiftclaw-kube-")
        try:
            loader = await load_kube_config(
                config_file=kubeconfig or str(Path.home() / ".kube" / "config"),
                client_configuration=configuration,
                persist_config=False,
                temp_file_path=tmpdir,
            )
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        with contextlib.suppress(OSError):
            os.rmdir(tmpdir)  # nothing inline: no folder left even if the process is killed
        auth = cls(configuration, loader=loader, tmpdir=tmpdir)
        auth._note_expiry()
        return auth

    async def _before_request(self, _: Configuration) -> None:
        await self.refresh()

    async def refresh(self, force: bool = False) -> None:
        """Renew the credentials when due (or now, with ``force``: after a 401)."""
        if self._token_file is not None:
            if force or self._token_stamp != self._stamp():
                self._read_token_file()
            return
        if self._loader is None or not (force or self._due()):
            return
        async with self._lock:
            if not force and not self._due():
                return  # another request renewed them while this one waited
            # Drop the cached exec credential so that the plugin runs again.
            self._loader.__dict__.pop("exec_plugin_expiry", None)
            await self._loader.load_and_set(self.configuration)
            self.renewals += 1
            self._note_expiry()

    def _due(self) -> bool:
        return self._renew_at is not None and _now() >= self._renew_at

    def _note_expiry(self) -> None:
        expires = getattr(self._loader, "exec_plugin_expiry", None)
        if isinstance(expires, datetime.datetime):
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=datetime.UTC)
            self.expiration = expires
            self._renew_at = renew_at(_now(), expires)
        else:
            self.expiration = self._renew_at = None

    def _stamp(self) -> tuple[int, int, int] | None:
        assert self._token_file is not None
        try:
            st = self._token_file.stat()  # follows the kubelet's ..data symlink swap
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read_token_file(self) -> None:
        assert self._token_file is not None
        stamp = self._stamp()
        token = self._token_file.read_text().strip()
        if not token:
            raise KubeError(0, f"the service-account token file {self._token_file} is empty")
        self.configuration.api_key["BearerToken"] = f"Bearer {token}"
        if self._token_stamp is not None:
            self.renewals += 1
        self._token_stamp = stamp

    @property
    def server(self) -> str:
        return str(self.configuration.host)

    def login(self) -> Login:
        """The credentials as they are now, with the time kopf should ask again."""
        c = self.configuration
        header = c.api_key.get("BearerToken")
        scheme, _, token = header.partition(" ") if header else (None, "", "")
        return Login(
            server=self.server,
            ca_path=c.ssl_ca_cert,
            cert_path=c.cert_file,
            key_path=c.key_file,
            scheme=scheme,
            token=token or None,
            insecure=not c.verify_ssl,
            expiration=self._renew_at,
        )

    def close(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


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


def _error_of(exc: ApiException) -> KubeError:
    raw = exc.body or b""
    try:
        err = orjson.loads(raw)
        return KubeError(exc.status, str(err.get("message", "")), str(err.get("reason", "")))
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return KubeError(exc.status, text[:300] or str(exc.reason))


class Gone(KubeError):
    """A watch or list from a resourceVersion the server no longer has (410): list again."""


@dataclass(frozen=True)
class Page:
    """One page of a list: its items, the snapshot's resourceVersion, the next page's token."""

    items: list[dict[str, Any]]
    resource_version: str
    next: str | None


# Fields a create sets and the applies leave to another owner (resources.runtime.created_as:
# the runtime Deployment's replicas, the HPA controller's): released when the create's entry
# becomes an Apply one, or the first apply would remove them.
CREATE_ONLY_FIELDS = {"Deployment": ("f:spec", "f:replicas")}


def adoption_patch(live: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The JSON patch that turns the operator's create entry of ``live`` into an Apply
    entry (without the fields of :data:`CREATE_ONLY_FIELDS`), or None: nothing to adopt."""
    managers = live["metadata"].get("managedFields") or []
    ours = {
        m.get("operation"): i
        for i, m in enumerate(managers)
        if m.get("manager") == FIELD_MANAGER and not m.get("subresource")
    }
    if "Apply" in ours or "Update" not in ours:
        return None
    index = ours["Update"]
    patch = [
        {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": live["metadata"]["resourceVersion"],
        },
        {"op": "replace", "path": f"/metadata/managedFields/{index}/operation", "value": "Apply"},
    ]
    released = CREATE_ONLY_FIELDS.get(str(live.get("kind")))
    fields: Any = managers[index].get("fieldsV1") or {}
    for step in released or ():
        fields = fields.get(step) if isinstance(fields, dict) else None
    if released and fields is not None:
        path = "/".join(released)
        patch.append({"op": "remove", "path": f"/metadata/managedFields/{index}/fieldsV1/{path}"})
    return patch


class Kube:
    def __init__(self, auth: Auth) -> None:
        self.auth = auth
        self._api = ApiClient(auth.configuration)
        # Watches hold their connection for minutes: a pool of their own (no limit), so
        # they never take the slots that requests wait for.
        self._streams: RESTClientObject | None = None

    async def _call(
        self,
        verb: str,
        kind: str,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        answers: frozenset[int] = frozenset(),
    ) -> Any:
        """One request; a status in ``answers`` (a 404 on a read) is raised but not counted
        as a failed request."""
        API_REQUESTS.labels(verb, kind).inc()
        for attempt in (1, 2):
            headers = {"Accept": "application/json", "Content-Type": content_type}
            # Runs the refresh hook: renewed credentials go into this request's header.
            await self._renewing(self._api.update_params_for_auth(headers, [], ["BearerToken"]))
            try:
                resp = await self._api.rest_client.request(
                    method,
                    self.auth.server + path,
                    query_params=params,
                    headers=headers,
                    body=body,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
            except ApiException as exc:
                if exc.status == 401 and attempt == 1:
                    API_REAUTHS.inc()
                    await self._renewing(self.auth.refresh(force=True))
                    continue
                if exc.status not in answers:
                    API_ERRORS.labels(str(exc.status)).inc()
                raise _error_of(exc) from None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                API_ERRORS.labels("0").inc()
                raise KubeError(0, f"API server unreachable: {exc!r}") from exc
            return orjson.loads(resp.data) if resp.data else None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _renewing(renewal: Awaitable[Any]) -> None:
        """Await a credential renewal; its failure (an exec plugin exiting non-zero, a token
        file being replaced) is transient, retried on the back-off. Its detail goes to the
        log only: a plugin's output has no place in an agent's status or Events."""
        try:
            await renewal
        except Exception as exc:
            API_ERRORS.labels("0").inc()
            log.warning("renewing the cluster credentials failed: %s", exc)
            raise KubeError(
                0, f"cluster credentials could not be renewed ({type(exc).__name__})"
            ) from None

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            obj = await self._call(
                "get", kind, "GET", path_of(api_version, kind, namespace, name), answers=NOT_FOUND
            )
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
        return await self.create_child(manifest) is not None

    async def create_child(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create a child that the cache says is missing: the object made, or None if the
        name is taken (409; a create never takes over an object, as an apply would)."""
        meta = manifest["metadata"]
        path = path_of(manifest["apiVersion"], manifest["kind"], meta.get("namespace"))
        try:
            made = await self._call(
                "create",
                manifest["kind"],
                "POST",
                path,
                manifest,
                params={"fieldManager": FIELD_MANAGER},
                answers=frozenset({409}),
            )
        except KubeError as err:
            if err.status == 409:
                return None
            raise
        return dict(made)

    async def adopt_for_apply(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Turn the operator's create (an Update entry in ``managedFields``) into an Apply
        entry, so that its next server-side apply owns, and so removes, the fields it no
        longer sets (a JSON patch guarded by the resourceVersion, as client-go's
        csaupgrade does). Nothing to do when an Apply entry exists already."""
        live = await self.get(api_version, kind, namespace, name)
        if live is None:
            return
        patch = adoption_patch(live)
        if patch is None:
            return
        await self._call(
            "adopt",
            kind,
            "PATCH",
            path_of(api_version, kind, namespace, name),
            patch,
            "application/json-patch+json",
        )

    async def list_page(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None,
        limit: int,
        cont: str | None = None,
    ) -> Page:
        """One page of a consistent list (a 410 raises :class:`Gone`: the token expired)."""
        params = {"limit": str(limit)}
        if label_selector:
            params["labelSelector"] = label_selector
        if cont:
            params["continue"] = cont
        try:
            obj = await self._call(
                "list", kind, "GET", path_of(api_version, kind, namespace), params=params
            )
        except KubeError as err:
            if err.status == 410:
                raise Gone(410, err.message, err.reason) from None
            raise
        meta = obj.get("metadata") or {}
        return Page(list(obj["items"]), str(meta.get("resourceVersion", "")), meta.get("continue"))

    async def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None,
        resource_version: str,
    ) -> AsyncIterator[dict[str, Any]]:
        """The events after ``resource_version`` (ADDED, MODIFIED, DELETED, BOOKMARK), until
        the server ends the watch; an expired version (410, as a status or an ERROR event)
        raises :class:`Gone`."""
        API_REQUESTS.labels("watch", kind).inc()
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        await self._renewing(self._api.update_params_for_auth(headers, [], ["BearerToken"]))
        if self._streams is None:
            self._streams = RESTClientObject(self.auth.configuration, maxsize=0)
        try:
            resp = await self._streams.request(
                "GET",
                self.auth.server + path_of(api_version, kind, namespace),
                query_params=params,
                headers=headers,
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(
                    sock_connect=REQUEST_TIMEOUT_SECONDS, sock_read=WATCH_SILENCE_SECONDS
                ),
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            API_ERRORS.labels("0").inc()
            raise KubeError(0, f"API server unreachable: {exc!r}") from exc
        async with resp:
            if resp.status >= 400:
                API_ERRORS.labels(str(resp.status)).inc()
                text = (await resp.read()).decode("utf-8", "replace")[:300]
                if resp.status == 401:
                    await self._renewing(self.auth.refresh(force=True))
                cls = Gone if resp.status == 410 else KubeError
                raise cls(resp.status, text)
            try:
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        code = int(status.get("code") or 0)
                        cls = Gone if code == 410 else KubeError
                        raise cls(
                            code, str(status.get("message", "")), str(status.get("reason", ""))
                        )
                    yield event
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise KubeError(0, f"watch interrupted: {exc!r}") from exc

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
                answers=NOT_FOUND,
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
            await self._call("discovery", "-", "GET", f"/apis/{group_version}", answers=NOT_FOUND)
        except KubeError as err:
            if err.status == 404:
                return False
            raise
        return True

    async def close(self) -> None:
        if self._streams is not None:
            await self._streams.close()
        await self._api.close()
        self.auth.close()

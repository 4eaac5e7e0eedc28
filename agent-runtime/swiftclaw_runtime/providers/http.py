"""The shared HTTP client: pooled keep-alive connections and failure classification."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from .base import FailureKind, Provider, UpstreamError


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def classify_status(status: int) -> FailureKind:
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status == 408:
        return "timeout"
    if status == 409 or status >= 500:
        return "server"
    return "client"


def _error_message(body: bytes) -> tuple[str, dict[str, Any] | None]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace"), None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"], data
        if isinstance(err, str):
            return err, data
        if isinstance(data.get("message"), str):
            return data["message"], data
    return body[:300].decode("utf-8", "replace"), None


def transport_error(err: BaseException) -> UpstreamError:
    """Classify a transport failure (no HTTP status to go by)."""
    if isinstance(err, (TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamError("timeout", f"no answer in time ({type(err).__name__})")
    if isinstance(err, aiohttp.ClientConnectorError):
        return UpstreamError("connect", f"cannot connect: {err.os_error}")
    if isinstance(err, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        return UpstreamError("connect", f"connection lost: {err}")
    if isinstance(err, aiohttp.ClientPayloadError):
        return UpstreamError("protocol", f"broken response body: {err}")
    if isinstance(err, aiohttp.ClientResponseError):
        return UpstreamError("protocol", f"bad response: {err.message}")
    return UpstreamError("connect", f"{type(err).__name__}: {err}")


class HttpClient:
    """One aiohttp session per provider: keep-alive pool, no cookies, no default headers."""

    def __init__(self, base_url: str, headers: dict[str, str], max_connections: int) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"content-type": "application/json", **headers}
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=30, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent",),
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    @asynccontextmanager
    async def post(
        self,
        path: str,
        body: dict[str, Any],
        timeout: aiohttp.ClientTimeout,
        params: dict[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST JSON; yields a 2xx response or raises a classified :class:`UpstreamError`."""
        session = self._get_session()
        try:
            async with session.post(
                self.base_url + path,
                data=orjson.dumps(body),
                headers=self._headers,
                timeout=timeout,
                params=params,
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    message, parsed = _error_message(raw)
                    raise UpstreamError(
                        classify_status(resp.status),
                        message,
                        resp.status,
                        parse_retry_after(resp.headers.get("retry-after")),
                        parsed,
                    )
                yield resp
        except UpstreamError:
            raise
        except (TimeoutError, aiohttp.ClientError) as err:
            raise transport_error(err) from None

    async def post_json(
        self, path: str, body: dict[str, Any], timeout: float, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        async with self.post(path, body, aiohttp.ClientTimeout(total=timeout), params) as resp:
            raw = await resp.read()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError("protocol", "response is not JSON", resp.status) from None
        if not isinstance(data, dict):
            raise UpstreamError("protocol", "response is not a JSON object", resp.status)
        return data

    async def get(self, path: str, timeout: float) -> int:
        """GET for health probes; returns the status, raises on connection failure."""
        session = self._get_session()
        try:
            async with session.get(
                self.base_url + path,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                await resp.read()
                return resp.status
        except (TimeoutError, aiohttp.ClientError) as err:
            raise transport_error(err) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def stream_timeout(idle_timeout: float) -> aiohttp.ClientTimeout:
    """No total limit for a stream, but each read must come within ``idle_timeout``."""
    return aiohttp.ClientTimeout(total=None, sock_connect=idle_timeout, sock_read=idle_timeout)


class HttpProvider(Provider):
    """A provider reached over HTTP through one :class:`HttpClient`."""

    http: HttpClient

    async def probe(self, timeout: float) -> None:
        status = await self.http.get("/models", timeout)
        if status >= 500:
            raise UpstreamError("server", f"GET /models answered {status}", status)
        if status in (401, 403):
            raise UpstreamError("auth", f"GET /models answered {status}: check the API key", status)

    async def close(self) -> None:
        await self.http.close()

"""The shared HTTP client of the providers: pooled keep-alive connections, failures classified."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import orjson

from .base import FailureKind, Provider, UpstreamError
from .pool import ConnectionLost, Pool, Response, ResponseTooLarge

ERROR_BODY_LIMIT = 64 * 1024


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
    """Classify a failure that came without an HTTP status."""
    if isinstance(err, TimeoutError):
        return UpstreamError("timeout", "no answer in time")
    if isinstance(err, ResponseTooLarge):
        return UpstreamError("protocol", str(err))
    if isinstance(err, ConnectionLost):
        if err.got_response:
            return UpstreamError("protocol", f"broken response: {err}")
        return UpstreamError("connect", str(err))
    return UpstreamError("connect", f"cannot connect: {err}")


class HttpClient:
    """Requests to one provider: its base URL, its fixed headers, a pool of connections."""

    def __init__(self, base_url: str, headers: dict[str, str], max_connections: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.pool = Pool(self.base_url, max_connections)
        self.set_headers(headers)

    def set_headers(self, headers: dict[str, str]) -> None:
        """The fixed headers of every request from now on (one assignment: a request
        being sent keeps the list it took)."""
        self._headers = [
            (b"content-type", b"application/json"),
            *((k.lower().encode(), v.encode()) for k, v in headers.items()),
        ]

    @asynccontextmanager
    async def post(
        self,
        path: str,
        body: dict[str, Any],
        params: dict[str, str] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> AsyncIterator[Response]:
        """POST JSON; yields a 2xx response or raises a classified :class:`UpstreamError`.

        Failures while the caller reads the body are classified the same way. On the way
        out the connection goes back to the pool if its answer was read to the end (see
        :meth:`Response.drain`), and is closed otherwise: on errors, on cancellation (a
        client that hung up), or when the caller stopped early.
        """
        if params:
            path += "?" + urlencode(params)
        resp: Response | None = None
        try:
            sent = self._headers + headers if headers else self._headers
            resp = await self.pool.request("POST", path, sent, orjson.dumps(body))
            if resp.status >= 400:
                raw = await resp.read(ERROR_BODY_LIMIT)
                message, parsed = _error_message(raw)
                raise UpstreamError(
                    classify_status(resp.status),
                    message,
                    resp.status,
                    parse_retry_after(resp.header("retry-after")),
                    parsed,
                )
            yield resp
        except UpstreamError:
            raise
        except (TimeoutError, OSError, ResponseTooLarge) as err:
            raise transport_error(err) from None
        finally:
            if resp is not None:
                resp.finish()  # no-op when the body was read to the end and released

    async def post_json(
        self,
        path: str,
        body: dict[str, Any],
        params: dict[str, str] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> dict[str, Any]:
        async with self.post(path, body, params, headers) as resp:
            raw = await resp.read()
            status = resp.status
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError("protocol", "response is not JSON", status) from None
        if not isinstance(data, dict):
            raise UpstreamError("protocol", "response is not a JSON object", status)
        return data

    async def get(self, path: str) -> int:
        """GET for health probes; returns the status, raises on transport failure."""
        try:
            resp = await self.pool.request("GET", path, self._headers)
            try:
                await resp.read(ERROR_BODY_LIMIT)
            finally:
                resp.finish()
            return resp.status
        except (TimeoutError, OSError, ResponseTooLarge) as err:
            raise transport_error(err) from None

    async def close(self) -> None:
        await self.pool.close()


class HttpProvider(Provider):
    """A provider reached over HTTP through one :class:`HttpClient`."""

    http: HttpClient

    def headers_for(self, api_key: str | None) -> dict[str, str]:
        """The provider's fixed headers with ``api_key`` (each adapter's auth header)."""
        raise NotImplementedError

    def use_key(self, api_key: str | None) -> None:
        self.http.set_headers(self.headers_for(api_key))

    async def probe(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                status = await self.http.get("/models")
        except TimeoutError:
            raise UpstreamError("timeout", f"GET /models gave no answer in {timeout:g}s") from None
        if status >= 500:
            raise UpstreamError("server", f"GET /models answered {status}", status)
        if status in (401, 403):
            raise UpstreamError("auth", f"GET /models answered {status}: check the API key", status)

    def connections(self) -> tuple[int, int]:
        pool = self.http.pool
        return pool.in_use, pool.open

    async def close(self) -> None:
        await self.http.close()

"""The HTTP surface: routes only, as a plain ASGI app.

No web framework: a dict of routes over ASGI keeps the per-request overhead to what the
service does, which is what the added-latency budget (p50 <= 1 ms) needs. Every failure
is rendered in OpenAI's error shape; nothing a client sends can crash the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import orjson

from . import pipeline
from .asgi import DisconnectWatch, Receive, Scope, Send, send_body, start_event_stream
from .auth import Principal
from .contract import HEALTH_PATH, METRICS_PATH, READY_PATH
from .errors import ApiError, invalid_request, not_found, unauthorized
from .ids import CLIENT_ID_ECHO, CLIENT_ID_HEADER, client_request_id, random_hex
from .memory import ELEMENT_BYTES, BodyClaim, BodyLedger, json_elements
from .messages.errors import anthropic_body
from .messages.serve import count_tokens as serve_count_tokens
from .messages.serve import messages as serve_messages
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .responses.serve import responses as serve_responses
from .routing import model_ids
from .runtime import Runtime
from .schemas import parse_feedback
from .spend import Identity

log = logging.getLogger("swiftclaw.app")
access_log = logging.getLogger("swiftclaw.access")

Handler = Callable[["App", Scope, Receive, Send], Awaitable[int]]
# A model route's work: the request of an authenticated principal (the server's own id
# for it, its body and Cache-Control header), answered in JSON or SSE.
Work = Callable[
    [Runtime, Principal, str | None, bytes, str | None],
    Awaitable["pipeline.JsonResult | pipeline.StreamResult"],
]


# Anthropic's Messages API: its errors in Anthropic's shape, its key in x-api-key too.
ANTHROPIC_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
# The API versions whose shapes (and stream events) are served: what Anthropic's SDKs and
# Claude Code send (a request of 2026-10-21 is served as one of 2023-06-01 would be: the
# parameters that version removed, temperature, top_p and top_k, are still taken).
ANTHROPIC_VERSIONS = ("2023-06-01", "2026-10-21")


async def send_error(send: Send, err: ApiError, anthropic: bool = False) -> int:
    headers = [(k.encode(), v.encode()) for k, v in err.headers.items()]
    body = anthropic_body(err) if anthropic else err.body()
    return await send_body(send, err.status, orjson.dumps(body), headers=headers)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _anthropic_headers(scope: Scope) -> list[str] | None:
    """The ``anthropic-beta`` header's betas (checked with the request); a 400 for an
    ``anthropic-version`` other than the one served."""
    version = header(scope, b"anthropic-version")
    if version is not None and version.strip() not in ANTHROPIC_VERSIONS:
        raise invalid_request(
            f"Unsupported 'anthropic-version' header {version[:64]!r}: this runtime serves "
            f"{' and '.join(ANTHROPIC_VERSIONS)}.",
            param="anthropic-version",
            code="unsupported_version",
        )
    betas = header(scope, b"anthropic-beta")
    if betas is None:
        return None
    return [b for b in (piece.strip() for piece in betas.split(",")) if b] or None


class _Expiry:
    """A timer's target that cancels a task and remembers doing so (no closure: a bound
    method of a slotted object is the cheapest callback to hand the loop)."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


class App:
    """ASGI callable serving one :class:`Runtime`.

    With ``--metrics-port`` the service port does not serve /metrics: an ``admin`` App
    (/metrics and the probes only) serves it on the metrics port."""

    def __init__(self, runtime: Runtime, admin: bool = False) -> None:
        self.rt = runtime
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): App.chat_completions,
            ("POST", "/chat/completions"): App.chat_completions,
            ("POST", "/v1/embeddings"): App.embeddings,
            ("POST", "/v1/responses"): App.responses,
            ("POST", "/responses"): App.responses,
            ("POST", "/v1/messages"): App.messages,
            ("POST", "/v1/messages/count_tokens"): App.count_tokens,
            ("POST", "/embeddings"): App.embeddings,
            ("GET", "/v1/models"): App.models,
            ("GET", "/v1/usage"): App.usage,
            ("POST", "/v1/feedback"): App.feedback,
            ("GET", "/models"): App.models,
            ("GET", HEALTH_PATH): App.healthz,
            ("GET", READY_PATH): App.readyz,
            ("GET", "/health"): App.health,
            ("GET", METRICS_PATH): App.metrics,
        }
        if admin:
            self.routes = {
                k: v
                for k, v in self.routes.items()
                if k[1] in (METRICS_PATH, HEALTH_PATH, READY_PATH)
            }
        elif runtime.options.metrics_port is not None:
            del self.routes[("GET", METRICS_PATH)]
        self.paths = {path for _, path in self.routes}
        self.in_flight = 0
        self.bodies = BodyLedger(runtime.options.body_pool_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        status = 500
        try:
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is None:
                raise self._no_route(scope)
            status = await handler(self, scope, receive, send)
        except ApiError as err:
            status = await send_error(send, err, scope["path"] in ANTHROPIC_PATHS)
            self.rt.metrics.errors.labels(err.code or err.type).inc()
        except OSError:
            status = 499  # the client went away mid-response
        except Exception:  # last line of defence: answer, log, keep serving
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            self.rt.metrics.errors.labels("internal").inc()
            status = await send_error(
                send,
                ApiError(
                    500,
                    "The server had an error while processing your request.",
                    "server_error",
                    "internal_error",
                ),
                scope["path"] in ANTHROPIC_PATHS,
            )
        if self.rt.options.access_log:
            who: dict[str, str] = scope.get("log") or {}
            access_log.info(
                "%s %s %d %.1fms%s",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                f" tenant={who['tenant']} user={who['user']}" if who else "",
                extra=who,  # the identity, never the prompt
            )

    def _no_route(self, scope: Scope) -> ApiError:
        if scope["path"] in self.paths:
            allowed = sorted(m for m, p in self.routes if p == scope["path"])
            return ApiError(
                405,
                f"Method {scope['method']} is not allowed on {scope['path']}; "
                f"use {', '.join(allowed)}.",
                "invalid_request_error",
                "method_not_allowed",
                headers={"allow": ", ".join(allowed)},
            )
        return not_found(f"Unknown path {scope['path']}.", code="unknown_url")

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.rt.startup()
                except Exception as err:
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.rt.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def read_body(self, scope: Scope, receive: Receive, claim: BodyClaim) -> bytes:
        """The request body, refusing wrong content types, bodies over the limit, bodies
        that do not arrive within ``--body-timeout-seconds`` (a slow client holds a slot),
        bodies the body pool has no room for (``claim`` holds what this one takes) and
        bodies of more JSON elements than the bound (what they would parse to).

        The timeout is a bare timer that cancels the task, not ``asyncio.timeout`` (a
        third of the time of reading a body that has already arrived, as most have)."""
        seconds = self.rt.options.body_timeout_seconds
        task = asyncio.current_task()
        assert task is not None
        expiry = _Expiry(task)
        timer = asyncio.get_running_loop().call_later(seconds, expiry.fire)
        try:
            body = await self._read_body(scope, receive, claim)
        except asyncio.CancelledError:
            if not expiry.fired or task.uncancel() > 0:
                raise  # cancelled by something else (shutdown, a hang-up): not ours to absorb
            self.rt.metrics.rejected.labels("body_timeout").inc()
            raise ApiError(
                408,
                f"The request body did not arrive within {seconds:g}s.",
                "invalid_request_error",
                "request_timeout",
            ) from None
        finally:
            timer.cancel()
        limit = self.rt.options.max_json_elements
        elements = json_elements(body, limit)
        if elements > limit:
            raise ApiError(
                413,
                f"The request body holds about {elements} JSON elements; this agent accepts "
                f"at most {limit} in one request.",
                "invalid_request_error",
                "request_too_complex",
            )
        if not claim.take(elements * ELEMENT_BYTES):  # what parsing it will hold
            raise self._no_memory()
        return body

    def _no_memory(self) -> ApiError:
        self.rt.metrics.rejected.labels("memory").inc()
        return ApiError(
            503,
            "This agent is holding as many request bodies as its memory allows; retry shortly.",
            "service_unavailable_error",
            "overloaded",
            headers={"retry-after": "1"},
        )

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"The request body is larger than the {self.rt.options.max_body_bytes} bytes "
            "this agent accepts.",
            "invalid_request_error",
            "request_too_large",
        )

    async def _read_body(self, scope: Scope, receive: Receive, claim: BodyClaim) -> bytes:
        limit = self.rt.options.max_body_bytes
        content_type = (header(scope, b"content-type") or "").lower()
        if not content_type.startswith("application/json"):
            raise ApiError(
                415,
                f"Unsupported 'Content-Type' header {content_type or '(none)'!r}: "
                "send 'application/json'.",
                "invalid_request_error",
                "unsupported_media_type",
                param="Content-Type",
            )
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise OSError("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            if not claim.take(len(chunk)):
                raise self._no_memory()
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    # --- routes -------------------------------------------------------------------

    async def chat_completions(self, scope: Scope, receive: Receive, send: Send) -> int:
        return await self._serve(scope, receive, send, pipeline.chat)

    async def embeddings(self, scope: Scope, receive: Receive, send: Send) -> int:
        return await self._serve(scope, receive, send, pipeline.embeddings)

    async def responses(self, scope: Scope, receive: Receive, send: Send) -> int:
        return await self._serve(scope, receive, send, serve_responses)

    async def messages(self, scope: Scope, receive: Receive, send: Send) -> int:
        work = partial(serve_messages, betas=_anthropic_headers(scope))
        return await self._serve(scope, receive, send, work)

    async def count_tokens(self, scope: Scope, receive: Receive, send: Send) -> int:
        work = partial(serve_count_tokens, betas=_anthropic_headers(scope))
        return await self._serve(scope, receive, send, work)

    def _authenticate(self, scope: Scope) -> Principal:
        """The caller, by its bearer key (or on the Messages API its ``x-api-key``)."""
        authorization = header(scope, b"authorization")
        if scope["path"] not in ANTHROPIC_PATHS:
            return self.rt.keys.authenticate(authorization)
        api_key = header(scope, b"x-api-key")
        if api_key is None and authorization is None and self.rt.keys.required:
            raise unauthorized(
                "Missing API key: send it in the 'x-api-key' header (or as "
                "'Authorization: Bearer <key>')."
            )
        return self.rt.keys.authenticate(authorization, api_key)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, work: Work) -> int:
        """What every model route shares: auth before the body, the in-flight bound, the
        body read, then ``work``'s JSON or event stream, noticing a client that hangs up."""
        principal = self._authenticate(scope)  # before the body
        scope["log"] = {"tenant": principal.tenant, "user": principal.user}
        # The server's id keys the request's ledgers and feedback; the client's, checked,
        # is only echoed and logged (see ids).
        client_id = client_request_id(header(scope, CLIENT_ID_HEADER.encode()))
        rid = random_hex()
        echo = [(CLIENT_ID_ECHO.encode(), client_id.encode())] if client_id is not None else []
        if client_id is not None:
            scope["log"]["client_request_id"] = client_id
        try:
            return await self._serve_admitted(scope, receive, send, work, principal, rid, echo)
        except ApiError as err:
            if client_id is not None:
                err.headers.setdefault(CLIENT_ID_ECHO, client_id)
            raise

    async def _serve_admitted(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        work: Work,
        principal: Principal,
        rid: str,
        echo: list[tuple[bytes, bytes]],
    ) -> int:
        rt = self.rt
        claim = self._enter()
        watch: DisconnectWatch | None = None
        events: AsyncIterator[bytes] | None = None
        result: pipeline.JsonResult | pipeline.StreamResult | None = None
        try:
            body = await self.read_body(scope, receive, claim)
            watch = DisconnectWatch(receive)
            result = await work(rt, principal, rid, body, header(scope, b"cache-control"))
            result.headers.extend(echo)
            if result.who is not None:  # the end user, when the request names one
                scope["log"].update(tenant=result.who.tenant, user=result.who.user)
            if isinstance(result, pipeline.JsonResult):
                watch.finish()
                return await send_body(send, result.status, result.body, headers=result.headers)
            events = result.events
            await start_event_stream(send, result.headers)
            async for event in events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            watch.finish()
            await send({"type": "http.response.body", "body": b""})
            return 200
        except asyncio.CancelledError:
            if watch is not None and watch.absorb():
                rt.metrics.errors.labels("client_closed_request").inc()
                return 499  # the client hung up; its upstream call has been cancelled
            raise
        finally:
            try:
                if watch is not None:
                    watch.finish()
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
                if isinstance(result, pipeline.StreamResult) and result.cleanup is not None:
                    await result.cleanup()
            finally:  # whatever the cleanup raised, the slot and the body claim come back
                self._leave(claim)

    def _enter(self) -> BodyClaim:
        """A place among the requests in flight (503 past the bound), with its claim on the
        body pool; every route that reads a body takes one."""
        rt = self.rt
        if self.in_flight >= rt.options.max_in_flight:
            rt.metrics.rejected.labels("overloaded").inc()
            raise ApiError(
                503,
                f"This agent is serving its limit of {rt.options.max_in_flight} requests; "
                "retry shortly.",
                "service_unavailable_error",
                "overloaded",
                headers={"retry-after": "1"},
            )
        self.in_flight += 1
        rt.metrics.in_flight.inc()
        return BodyClaim(self.bodies)

    def _leave(self, claim: BodyClaim) -> None:
        claim.release()
        self.in_flight -= 1
        self.rt.metrics.in_flight.dec()

    def _who(self, scope: Scope) -> Identity:
        """The caller's identity; ``?user=`` names an end user when the agent trusts the
        request's user field (``auth.userFromRequest``)."""
        principal = self.rt.keys.authenticate(header(scope, b"authorization"))
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        user = query.get("user", [None])[0]
        if user is not None and len(user) > 256:
            raise invalid_request("'user' must be at most 256 characters.", param="user")
        return self.rt.spend.who(principal, user)

    async def usage(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Today's spend, the budget left, the limits and what remains of them."""
        report = await self.rt.spend.usage(self._who(scope))
        if self.rt.cache.semantic_on:  # the agent's, per tier: no client value in it
            report["semanticCache"] = self.rt.cache.shadow.report()
        return await send_body(send, 200, orjson.dumps(report))

    async def feedback(self, scope: Scope, receive: Receive, send: Send) -> int:
        """A rating of one response (by the ``x-request-id`` the server gave it, or its
        completion id). The comment is accepted for the client's sake and neither stored
        nor logged."""
        who = self._who(scope)
        claim = self._enter()
        try:
            body = await self.read_body(scope, receive, claim)
            fb = parse_feedback(pipeline.decode_json(body))
            del body
            result = await self.rt.spend.feedback(who, fb.id, fb.rating, fb.task_completed)
        finally:
            self._leave(claim)
        if result == "unknown":
            raise not_found(
                f"No response '{fb.id}' of yours was served in the last 24 hours.",
                code="response_not_found",
                param="id",
            )
        if result == "duplicate":
            raise ApiError(
                409,
                f"Feedback for response '{fb.id}' was already recorded.",
                "invalid_request_error",
                "feedback_exists",
                param="id",
            )
        return await send_body(
            send, 200, orjson.dumps({"object": "feedback", "id": fb.id, "recorded": True})
        )

    async def models(self, scope: Scope, receive: Receive, send: Send) -> int:
        self.rt.keys.authenticate(header(scope, b"authorization"))
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "swiftclaw"}
            for m in model_ids(self.rt.policy, self.rt.name)
        ]
        return await send_body(send, 200, orjson.dumps({"object": "list", "data": data}))

    async def healthz(self, scope: Scope, receive: Receive, send: Send) -> int:
        return await send_body(send, 200, b'{"status":"ok"}')

    async def readyz(self, scope: Scope, receive: Receive, send: Send) -> int:
        h = self.rt.health
        if h.ready:
            return await send_body(send, 200, b'{"ready":true}')
        reason = "draining" if h.draining else "starting"
        return await send_body(send, 503, orjson.dumps({"ready": False, "reason": reason}))

    async def health(self, scope: Scope, receive: Receive, send: Send) -> int:
        """The status for anyone; the checks (provider names, errors, memory) only for a
        caller with an API key, since they describe the deployment's insides."""
        status, body = await self.rt.health.detail()
        try:
            self.rt.keys.authenticate(header(scope, b"authorization"))
        except ApiError:
            body = {k: body[k] for k in ("status", "ready", "draining")}
        else:  # what of the operator's fleet document this pod applies now
            body = {**body, "fleet": self.rt.fleet.describe()}
        return await send_body(send, status, orjson.dumps(body))

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> int:
        return await send_body(send, 200, self.rt.metrics.render(), METRICS_CONTENT_TYPE.encode())

"""The API handler base: CORS, the local API key, bounded JSON bodies, OpenAI error envelopes."""

from __future__ import annotations

import hashlib
import hmac
import logging
from http import HTTPStatus

import orjson
import tornado.web

from common.store import ConfigStore
from server.errors import ApiError

log = logging.getLogger("server")


class ApiHandler(tornado.web.RequestHandler):
    """Every API route derives from this. `require_key = False` for /health."""

    require_key = True

    def initialize(self, services) -> None:
        self.services = services

    @property
    def store(self) -> ConfigStore:
        return self.services.store

    # --- CORS ----------------------------------------------------------------------------

    def set_default_headers(self) -> None:
        # Runs before initialize() (and again for error pages), so read the app-wide setting.
        origins = self.application.settings["cors_origins"]
        origin = self.request.headers.get("Origin")
        if "*" in origins:
            self.set_header("Access-Control-Allow-Origin", "*")
        elif origin and origin in origins:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")
        self.set_header("Access-Control-Expose-Headers", "Retry-After, X-Request-Id")

    def options(self, *_args) -> None:
        """Answer a preflight before (and without) authentication."""
        requested = self.request.headers.get("Access-Control-Request-Headers", "")
        names = {h.strip() for h in requested.split(",") if h.strip()}
        allowed = ", ".join(sorted(names | {"Authorization", "Content-Type"}, key=str.lower))
        self.set_header("Access-Control-Allow-Headers", allowed)
        self.set_header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
        self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)
        self.finish()

    # --- auth ----------------------------------------------------------------------------

    def prepare(self) -> None:
        if self.request.method == "OPTIONS" or not self.require_key:
            return
        header = self.request.headers.get("Authorization", "")
        if header[:7].lower() != "bearer " or not header[7:].strip():
            raise ApiError(401, "Missing API key: send it as 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")
        given = hashlib.sha256(header[7:].strip().encode("utf-8", "surrogateescape")).digest()
        keys = self.services.config().api_keys
        # Compare digests of equal length, and every key, so timing tells nothing.
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(given, hashlib.sha256(key.encode()).digest())
        if not matched:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    # --- bodies --------------------------------------------------------------------------

    def json_body(self) -> dict:
        """The request body as a JSON object, or a 400 that says what is wrong with it."""
        body = self.request.body
        if len(body) > self.services.settings.max_body_bytes:
            raise ApiError(413, f"Request body too large: the limit is {self.services.settings.max_body_bytes} bytes.",
                           code="request_too_large")
        if not body.strip():
            raise ApiError(400, "The request body is empty: send a JSON object.", code="invalid_json")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"The request body is not valid JSON ({exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}).", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
        return data

    def send_json(self, data: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(data))

    # --- errors --------------------------------------------------------------------------

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            error = exc
        elif isinstance(exc, tornado.web.HTTPError) and exc.status_code < 500:
            reason = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else ""
            error = ApiError(exc.status_code, exc.log_message % exc.args if exc.log_message else reason,
                             code=reason.lower().replace(" ", "_") or None)
        else:
            error = ApiError(500, "Internal server error.", type="server_error", code="internal_error")
        self.set_status(error.status)
        if error.status == 405:
            # RFC 9110: a 405 names the methods that do work here.
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(error.body()))

    def allowed_methods(self) -> list[str]:
        """The methods this handler implements (Tornado's defaults answer 405)."""
        base = tornado.web.RequestHandler
        return [m for m in ("GET", "POST", "DELETE") if getattr(type(self), m.lower()) is not getattr(base, m.lower())
                ] + ["OPTIONS"]

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, ApiError):
            if self._headers_written:
                return
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, ApiError):
            log.info("%s %s -> %d %s", self.request.method, self.request.path, value.status, value.code)
            return
        super().log_exception(typ, value, tb)


class NotFoundHandler(ApiHandler):
    """Unknown paths: 404 in the envelope (after the key check, so paths are not probed for free)."""

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, f"Unknown path {self.request.path}. See /v1/models and /v1/chat/completions.",
                       code="not_found")

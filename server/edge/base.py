"""The API handler base: CORS, request ids, size limits, the local API key, bounded JSON bodies, error envelopes."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from http import HTTPStatus

import orjson
import tornado.web

from common.store import ConfigStore
from server.core.errors import AUTH, BAD_REQUEST, NOT_FOUND, TOO_LARGE, Failure
from server.dialects.openai_chat.auth import api_key as openai_api_key
from server.dialects.openai_chat.errors import envelope as openai_envelope

log = logging.getLogger("server")

# An incoming X-Request-Id is echoed only when it looks like an id (it goes into logs and headers).
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Past these a request is answered 414/431 in the envelope; HTTPServer's own max_header_size (which drops
# the connection without a word) is set well above them, see server/edge/serve.py.
MAX_URI_BYTES = 8192
MAX_HEADER_BYTES = 65536


class ApiHandler(tornado.web.RequestHandler):
    """Every API route derives from this. `require_key = False` for /health."""

    require_key = True
    client_gone = False   # the caller hung up (set by handlers that stream, and by the SSE writer)
    # The caller's dialect: where its key is, and how its errors look (OpenAI's for every route so far).
    locate_key = staticmethod(openai_api_key)
    envelope = staticmethod(openai_envelope)
    access_model: str | None = None   # the request's model, for the access log

    def initialize(self, services) -> None:
        self.services = services

    @property
    def request_id(self) -> str:
        """The caller's X-Request-Id when it is sane, else a new one; the same for the whole request."""
        if "_request_id" not in self.__dict__:
            given = self.request.headers.get("X-Request-Id", "")
            self._request_id = given if SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        return self._request_id

    def access_account(self) -> str | None:
        """The account that served this request, for the access log (chat handlers keep it in `_turn`)."""
        turn = getattr(self, "_turn", None)
        account = getattr(turn, "account", None)
        return getattr(account, "name", None)

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
        self.set_header("X-Request-Id", self.request_id)

    def options(self, *_args) -> None:
        """Answer a preflight before (and without) authentication."""
        requested = self.request.headers.get("Access-Control-Request-Headers", "")
        names = {h.strip() for h in requested.split(",") if h.strip()}
        allowed = ", ".join(sorted(names | {"Authorization", "Content-Type"}, key=str.lower))
        self.set_header("Access-Control-Allow-Headers", allowed)
        self.set_header("Access-Control-Allow-Methods", "GET, HEAD, POST, DELETE, OPTIONS")
        self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)
        self.finish()

    # --- auth ----------------------------------------------------------------------------

    def head(self, *args):
        """HEAD wherever GET is (health probes use it); Tornado sends the headers and drops the body."""
        if type(self).get is tornado.web.RequestHandler.get:
            raise tornado.web.HTTPError(405)
        return self.get(*args)

    def prepare(self) -> None:
        self._check_sizes()
        if self.request.method == "OPTIONS" or not self.require_key:
            return
        given = hashlib.sha256(self.locate_key(self.request.headers).encode("utf-8", "surrogateescape")).digest()
        keys = self.services.config().api_keys
        # Compare digests of equal length, and every key, so timing tells nothing.
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(given, hashlib.sha256(key.encode()).digest())
        if not matched:
            raise Failure(AUTH, "Incorrect API key provided.", code="invalid_api_key")

    def _check_sizes(self) -> None:
        """414 for a URI, 431 for headers past our limits, before anything else looks at them."""
        if len(self.request.uri.encode("utf-8", "surrogateescape")) > MAX_URI_BYTES:
            raise Failure(TOO_LARGE, f"Request URI too long: the limit is {MAX_URI_BYTES} bytes.", code="uri_too_long",
                          status=414)
        size = sum(len(k) + len(v) + 4 for k, v in self.request.headers.get_all())
        if size > MAX_HEADER_BYTES:
            raise Failure(TOO_LARGE, f"Request headers too large: the limit is {MAX_HEADER_BYTES} bytes.",
                          code="request_header_fields_too_large", status=431)

    # --- bodies --------------------------------------------------------------------------

    def json_body(self) -> dict:
        """The request body as a JSON object, or a 400 that says what is wrong with it."""
        body = self.request.body
        if len(body) > self.services.settings.max_body_bytes:
            raise Failure(TOO_LARGE, f"Request body too large: the limit is {self.services.settings.max_body_bytes} "
                          "bytes.", code="request_too_large", status=413)
        if not body.strip():
            raise Failure(BAD_REQUEST, "The request body is empty: send a JSON object.", code="invalid_json")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Failure(BAD_REQUEST, f"The request body is not valid JSON ({exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}).", code="invalid_json") from None
        if not isinstance(data, dict):
            raise Failure(BAD_REQUEST, "The request body must be a JSON object.", code="invalid_json")
        if isinstance(data.get("model"), str):
            self.access_model = data["model"][:100]
        return data

    def send_json(self, data: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(data))

    # --- errors --------------------------------------------------------------------------

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, Failure):
            status, headers, body = self.envelope(exc)
        elif isinstance(exc, tornado.web.HTTPError) and exc.status_code < 500:
            status, headers = exc.status_code, {}
            reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
            body = {"error": {"message": exc.log_message % exc.args if exc.log_message else reason,
                              "type": "invalid_request_error", "param": None,
                              "code": reason.lower().replace(" ", "_") or None}}
        else:
            status, headers, body = 500, {}, {"error": {"message": "Internal server error.", "type": "server_error",
                                                        "param": None, "code": "internal_error"}}
        self.set_status(status)
        if status == 405:
            # RFC 9110: a 405 names the methods that do work here.
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        for name, value in headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(body))

    def allowed_methods(self) -> list[str]:
        """The methods this handler implements (Tornado's defaults answer 405)."""
        base = tornado.web.RequestHandler
        methods = [m for m in ("GET", "POST", "DELETE") if getattr(type(self), m.lower()) is not getattr(base, m.lower())]
        if "GET" in methods:
            methods.insert(1, "HEAD")   # head() answers wherever get() does
        return methods + ["OPTIONS"]

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, Failure):
            if self._headers_written:
                if not self._finished:
                    self.finish()   # never leave a started response open
                return
            self.send_error(self.envelope(e)[0], exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, Failure):
            log.info("%s %s -> %d %s", self.request.method, self.request.path, self.envelope(value)[0], value.code)
            return
        super().log_exception(typ, value, tb)


class NotFoundHandler(ApiHandler):
    """Unknown paths: 404 in the envelope (after the key check, so paths are not probed for free)."""

    def prepare(self) -> None:
        super().prepare()
        raise Failure(NOT_FOUND, f"Unknown path {self.request.path}. See /v1/models and /v1/chat/completions.",
                      code="not_found")

"""One access log line per request: method, path, status, model, account, duration, request id; no secrets."""

from __future__ import annotations

import logging

import tornado.web

log = logging.getLogger("server.access")


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's log_function: the path only (never the query), and the fields a JSON log can filter on."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    fields = {"method": handler.request.method, "path": handler.request.path, "status": status,
              "model": getattr(handler, "access_model", None),
              "account": handler.access_account() if hasattr(handler, "access_account") else None,
              "duration_ms": round(1000 * handler.request.request_time(), 1),
              "request_id": getattr(handler, "request_id", None)}
    log.log(level, "%d %s %s model=%s account=%s %.1fms id=%s", status, fields["method"], fields["path"],
            fields["model"] or "-", fields["account"] or "-", fields["duration_ms"], fields["request_id"] or "-",
            extra=fields)

"""The Tornado Application and its routes."""

from __future__ import annotations

import tornado.web

from server.edge.access_log import log_request
from server.edge.base import NotFoundHandler
from server.edge.chat_handler import ChatCompletionsHandler
from server.edge.handlers import HealthHandler, ModelsHandler
from server.edge.home import HomeHandler, HomePage
from server.edge.openapi import OpenApiHandler
from server.edge.readiness import ReadyHandler
from server.edge.status import StatusHandler
from server.edge.token_check import TokenCheckHandler
from server.services import Services


def make_app(services: Services) -> tornado.web.Application:
    """Every route under /v1 and without it (some clients drop the prefix)."""
    args = {"services": services}
    routes = [
        (r"/", HomeHandler, {**args, "page": HomePage.load()}),
        (r"/health", HealthHandler, args),
        (r"/health/ready", ReadyHandler, args),
        (r"/openapi\.json", OpenApiHandler, args),
        (r"/(?:v1/)?models(?:/([^/]{1,256}))?", ModelsHandler, args),
        (r"/(?:v1/)?token/check", TokenCheckHandler, args),
        (r"/(?:v1/)?status", StatusHandler, args),
        (r"/(?:v1/)?chat/completions(?:/([A-Za-z0-9_.:-]{1,128}))?", ChatCompletionsHandler, args),
    ]
    return tornado.web.Application(routes, default_handler_class=NotFoundHandler, default_handler_args=args,
                                   log_function=log_request, cors_origins=services.settings.cors_origins)


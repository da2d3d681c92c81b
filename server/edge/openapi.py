"""GET /openapi.json: an OpenAPI 3.1 description of this API (for tools and for schema-driven fuzzing)."""

from __future__ import annotations

from server import __version__
from server.core.model_catalog import FALLBACK, OPENAI_EFFORTS
from server.core.models import CANONICAL
from server.edge.base import ApiHandler

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
_ERRORS = {str(status): {"description": reason, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
           for status, reason in ((400, "invalid request"), (401, "missing or wrong API key"),
                                  (404, "unknown model, path or conversation"), (413, "body too large"),
                                  (429, "Kimi throttled or a quota is used up"),
                                  (502, "Kimi failed"), (503, "no usable account"), (504, "Kimi timed out"))}
_TEXT = {"type": "string", "pattern": "\\S"}   # Kimi needs some text
_CONTENT = {"oneOf": [_TEXT, {"type": "array", "minItems": 1, "items": {"type": "object", "properties": {
    "type": {"type": "string", "enum": ["text"]}, "text": _TEXT}, "required": ["type", "text"]}}]}
_MESSAGE = {"oneOf": [
    {"type": "object", "required": ["role", "content"], "additionalProperties": False, "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
        "content": _CONTENT, "name": {"type": "string"}}},
    {"type": "object", "required": ["role", "content", "tool_call_id"], "additionalProperties": False, "properties": {
        "role": {"type": "string", "enum": ["tool"]}, "content": _CONTENT, "tool_call_id": {"type": "string"}}}]}
_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
# A documented subset that is always valid (a named tool_choice must name an offered tool: not expressible here).
_TOOL = {"type": "object", "required": ["type", "function"], "additionalProperties": False, "properties": {
    "type": {"type": "string", "enum": ["function"]},
    "function": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
        "name": _NAME, "description": {"type": "string"}, "strict": {"type": "boolean"},
        "parameters": {"type": "object", "additionalProperties": False, "properties": {
            "type": {"type": "string", "enum": ["object"]}}}}}}}
_RESPONSE_FORMAT = {"oneOf": [
    {"type": "object", "required": ["type"], "additionalProperties": False,
     "properties": {"type": {"type": "string", "enum": ["text", "json_object"]}}},
    {"type": "object", "required": ["type", "json_schema"], "additionalProperties": False, "properties": {
        "type": {"type": "string", "enum": ["json_schema"]},
        "json_schema": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
            "name": _NAME, "description": {"type": "string"}, "strict": {"type": "boolean"},
            "schema": {"type": "object", "additionalProperties": False, "properties": {
                "type": {"type": "string", "enum": ["object"]}}}}}}}]}
_REQUEST = {"type": "object", "required": ["model", "messages"], "properties": {
    "model": {"type": "string", "enum": FALLBACK.ids() + list(CANONICAL)},
    "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
    "stream": {"type": "boolean"}, "stream_options": {"type": "object", "properties": {
        "include_usage": {"type": "boolean"}}},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2}, "top_p": {"type": "number", "minimum": 0,
                                                                             "maximum": 1},
    "max_tokens": {"type": "integer", "minimum": 1}, "n": {"type": "integer", "enum": [1]},
    "user": {"type": "string"}, "use_search": {"type": "boolean"}, "conversation_id": {"type": "string"},
    "reasoning_effort": {"type": "string", "enum": list(OPENAI_EFFORTS)},
    "tools": {"type": "array", "maxItems": 1, "items": _TOOL},
    "tool_choice": {"type": "string", "enum": ["auto", "none"]}, "parallel_tool_calls": {"type": "boolean"},
    "response_format": _RESPONSE_FORMAT}}
_MODEL = {"type": "object", "required": ["id", "object", "created", "owned_by"], "properties": {
    "id": {"type": "string"}, "object": {"type": "string", "enum": ["model"]}, "created": {"type": "integer"},
    "owned_by": {"type": "string"}}}
_COMPLETION = {"type": "object", "required": ["id", "object", "created", "model", "choices", "usage"], "properties": {
    "id": {"type": "string"}, "object": {"type": "string", "enum": ["chat.completion"]},
    "created": {"type": "integer"}, "model": {"type": "string"}, "choices": {"type": "array"},
    "usage": {"type": "object"}}}
_AUTH = [{"bearer": []}]
# Each server-sent event carries one `data` line: a chat.completion.chunk, an error envelope, or [DONE].
_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "kimi-bridge", "version": __version__,
             "description": "An OpenAI-compatible API in front of the Kimi web chat."},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                   "schemas": {"Error": _ERROR}},
    "paths": {
        "/v1/chat/completions": {"post": {
            "operationId": "createChatCompletion", "security": _AUTH,
            "requestBody": {"required": True, "content": _json(_REQUEST)},
            "responses": {"200": {"description": "the answer (JSON, or an event stream when stream is true)",
                                  "content": {**_json(_COMPLETION), "text/event-stream": {"schema": _EVENT}}},
                          **_ERRORS}}},
        "/v1/chat/completions/{conversation_id}": {
            "parameters": [{"name": "conversation_id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"}}],
            "post": {"operationId": "continueConversation", "security": _AUTH,
                     "requestBody": {"required": True, "content": _json(_REQUEST)},
                     "responses": {"200": {"description": "the answer",
                                           "content": {**_json(_COMPLETION),
                                                       "text/event-stream": {"schema": _EVENT}}},
                                   **_ERRORS}},
            "delete": {"operationId": "deleteConversation", "security": _AUTH,
                       "responses": {"200": {"description": "forgotten", "content": _json({"type": "object"})},
                                     **_ERRORS}}},
        "/v1/models": {"get": {"operationId": "listModels", "security": _AUTH, "responses": {
            "200": {"description": "model names: the accounts' Kimi catalog, then kimi-bridge's own",
                    "content": _json({"type": "object", "required": ["data"],
                                      "properties": {"data": {"type": "array", "items": _MODEL}}})},
            **_ERRORS}}},
        "/v1/models/{model}": {
            "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"operationId": "retrieveModel", "security": _AUTH, "responses": {
                "200": {"description": "the model (any name a chat request takes)", "content": _json(_MODEL)},
                **_ERRORS}}},
        "/v1/status": {"get": {"operationId": "status", "security": _AUTH, "responses": {
            "200": {"description": "accounts and server state", "content": _json({"type": "object"})}, **_ERRORS}}},
        "/token/check": {"post": {"operationId": "checkToken", "security": _AUTH,
                                  "requestBody": {"required": True, "content": _json({
                                      "type": "object", "required": ["token"],
                                      "properties": {"token": {"type": "string", "minLength": 1}}})},
                                  "responses": {"200": {"description": "live or not", "content": _json({
                                      "type": "object", "required": ["live"],
                                      "properties": {"live": {"type": "boolean"}}})}, **_ERRORS}}},
        "/health": {"get": {"operationId": "health", "responses": {
            "200": {"description": "alive", "content": _json({"type": "object", "required": ["status"]})}}}},
        "/health/ready": {"get": {"operationId": "ready", "responses": {
            "200": {"description": "an account is usable", "content": _json({"type": "object", "required": ["status"]})},
            "503": {"description": "no account is usable, and counts of why",
                    "content": _json({"type": "object", "required": ["status", "reason"]})}}}},
    },
}


class OpenApiHandler(ApiHandler):
    """The API's description; no key needed (it holds nothing secret)."""

    require_key = False

    def get(self) -> None:
        self.send_json(SPEC)

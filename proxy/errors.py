"""Errors in OpenAI's wire format: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import orjson
from django.http import HttpResponse


class ProxyError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)

    def response(self) -> HttpResponse:
        resp = HttpResponse(self.body(), status=self.status, content_type="application/json")
        for name, value in self.headers.items():
            resp[name] = value
        return resp


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def invalid_key() -> ProxyError:
    return ProxyError(
        401,
        "Incorrect API key provided. Pass a gateway virtual key as 'Authorization: Bearer sk-gw-...'.",
        type="invalid_request_error",
        code="invalid_api_key",
    )


def model_not_found(model: str) -> ProxyError:
    return ProxyError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ProxyError:
    return ProxyError(400, message, type="invalid_request_error", param=param, code=code)


def internal_error() -> ProxyError:
    return ProxyError(
        503,
        "The gateway could not serve this request right now; retry shortly.",
        type="server_error",
        code="gateway_unavailable",
        headers={"retry-after": "1"},
    )

"""Every error leaves the API as application/problem+json with a stable ``type``.

The OpenAPI document lists, per operation, the types it can answer with an example of each
(``api.openapi``): a new type answered here (or a changed title) is declared there too, and
``tests/api/test_openapi_contract.py`` fails on an answer the document does not declare.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from booking.errors import BookingError, RateLimited
from booking.rate_limits import limit_field

PROBLEM_BASE = "https://boxoffice.dev/problems/"
log = logging.getLogger("boxoffice.api")


def problem_type(code: str) -> str:
    return PROBLEM_BASE + code


def problem(status: int, code: str, title: str, detail: str = "", **extra: Any) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=status, type_=problem_type(code), title=title, detail=detail or title, extra=extra or None
    )


def retry_after(error: BookingError) -> int | None:
    """Seconds a client should wait before retrying: every 429 and 503 says when."""
    if error.status not in (429, 503):
        return None
    return int(error.extra.get("retry_after", 1))


def _from_booking(error: BookingError) -> ProblemDetailsException:
    exc = problem(error.status, error.code, error.title, error.detail, **error.extra)
    if (seconds := retry_after(error)) is not None:
        exc.headers = {"Retry-After": str(seconds)}
        if isinstance(error, RateLimited):
            # The route's RateLimit-Policy is added by api.rate_limits, on every answer.
            exc.headers["RateLimit"] = limit_field(error.policy, seconds)
    return exc


def _from_http(error: HTTPException) -> ProblemDetailsException:
    if isinstance(error, ValidationException):
        errors = error.extra if isinstance(error.extra, list) else []
        return problem(400, "invalid-request", "The request is not valid", str(error.detail), errors=errors)
    if isinstance(error, NotFoundException):
        return problem(404, "not-found", "Not found", str(error.detail))
    if error.status_code == 400:
        # Malformed JSON and other unreadable requests: one problem type for every bad request.
        return problem(400, "invalid-request", "The request is not valid", str(error.detail))
    code = {405: "method-not-allowed", 401: "unauthorized", 403: "forbidden", 429: "rate-limited"}.get(
        error.status_code, "http-error"
    )
    exc = problem(error.status_code, code, str(error.detail) or "Request failed", str(error.detail))
    exc.headers = error.headers
    return exc


def _unavailable(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.warning("dependency unavailable on %s: %s", request.url.path, error)
    exc = problem(503, "unavailable", "Service temporarily unavailable", "Try again in a few seconds.")
    exc.headers = {"Retry-After": "5"}
    return exc.to_response(request)


# What a process at capacity answers: its in-flight bound (api.overload) or its pool wait.
OVERLOADED = ("overloaded", "Too many requests at once", "This server is at capacity. Try again in a moment.")


def _pool_exhausted(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    # Every pooled connection stayed busy for the whole (short) pool wait: the process is
    # overloaded, which is a 503 to retry, never a 500.
    exc = problem(503, *OVERLOADED)
    exc.headers = {"Retry-After": "1"}
    return exc.to_response(request)


def _recursion(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    # msgspec gives up on JSON nested deeper than the interpreter's recursion limit, while
    # Litestar decodes the request: bad input, not a fault of ours. Any other recursion is.
    if "while deserializing" in str(error):
        return problem(
            400, "invalid-request", "The request is not valid", "The JSON body is nested too deeply."
        ).to_response(request)
    return _unexpected(request, error)


def _unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return problem(500, "internal-error", "Internal error").to_response(request)


problem_details = ProblemDetailsPlugin(
    ProblemDetailsConfig(
        enable_for_all_http_exceptions=True,
        exception_to_problem_detail_map={BookingError: _from_booking, HTTPException: _from_http},
    )
)

exception_handlers = {
    PoolTimeout: _pool_exhausted,
    OperationalError: _unavailable,
    InterfaceError: _unavailable,
    RedisError: _unavailable,
    RecursionError: _recursion,
    Exception: _unexpected,
}

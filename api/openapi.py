"""The OpenAPI document tells the truth about errors: every one is problem+json.

Litestar documents a 400 of its own shape on every route that validates input; Boxoffice
answers every error as RFC 9457 problem details instead (``api/problems.py``). So the
generated document is corrected once, at start-up: the 400s, and a ``default`` response for
every other error status, point at one ``Problem`` schema.
"""

from __future__ import annotations

from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType

PROBLEM_MEDIA_TYPE = "application/problem+json"

PROBLEM = Schema(
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details. `type` is stable per error; extra members carry details.",
    properties={
        "type": Schema(type=OpenAPIType.STRING, description="https://boxoffice.dev/problems/<code>"),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
    },
    required=["type", "title", "status"],
)


def _problem_response(description: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={PROBLEM_MEDIA_TYPE: OpenAPIMediaType(schema=Reference("#/components/schemas/Problem"))},
    )


def document_problems(app: Litestar) -> None:
    """Rewrite the app's (cached) OpenAPI document so its error responses are problem+json."""
    openapi = app.plugins.get(OpenAPIPlugin).provide_openapi()
    if openapi.components.schemas is None:
        openapi.components.schemas = {}
    openapi.components.schemas["Problem"] = PROBLEM
    for path_item in (openapi.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation: Operation | None = getattr(path_item, method, None)
            if operation is None:
                continue
            responses = operation.responses or {}
            if "400" in responses:
                responses["400"] = _problem_response("The request is not valid")
            responses.setdefault("default", _problem_response("An error, as problem details"))
            operation.responses = responses

"""JSON answers written once from a pydantic model.

Returning a model with `response_model=` makes FastAPI validate it again and serialise it through
jsonable structures; a Response with the model's own JSON bytes skips both (the route keeps its
response_model for the OpenAPI document). Used on the hot read paths.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel
from starlette.responses import Response


def model_response(
    model: BaseModel, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    body = type(model).__pydantic_serializer__.to_json(model)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")

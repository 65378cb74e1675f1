"""429 answers: the RateLimited error and the IETF draft RateLimit / RateLimit-Policy fields.

Header syntax follows draft-ietf-httpapi-ratelimit-headers (-08 and later): structured-field
lists of named quota policies, `"name";q=<quota>;w=<window s>` and `"name";r=<remaining>;t=<s>`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus

from fastapi import FastAPI, Request
from starlette.responses import Response

from service.core.errors import DomainError, problem_response


@dataclass(frozen=True, slots=True)
class Quota:
    """One policy as it stands for this client: `remaining` units, reset in `reset_s` seconds."""

    name: str
    limit: int
    window_s: int
    remaining: int
    reset_s: int


class RateLimited(DomainError):
    status = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(self, detail: str, quotas: Sequence[Quota]) -> None:
        super().__init__(detail)
        self.quotas = tuple(quotas)

    @property
    def retry_after_s(self) -> int:
        """Seconds until every exhausted quota has reset (at least 1)."""
        exhausted = [q.reset_s for q in self.quotas if q.remaining <= 0] or [1]
        return max(1, *exhausted)


def rate_limit_headers(quotas: Sequence[Quota]) -> Mapping[str, str]:
    return {
        "RateLimit-Policy": ", ".join(f'"{q.name}";q={q.limit};w={q.window_s}' for q in quotas),
        "RateLimit": ", ".join(f'"{q.name}";r={max(q.remaining, 0)};t={q.reset_s}' for q in quotas),
    }


async def _on_rate_limited(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimited)
    return problem_response(
        exc.status,
        exc.detail,
        instance=request.url.path,
        problem_type=exc.problem_type,
        headers={"Retry-After": str(exc.retry_after_s), **rate_limit_headers(exc.quotas)},
    )


def install_rate_limit_handler(app: FastAPI) -> None:
    """Takes precedence over the generic DomainError handler (handlers match by class)."""
    app.add_exception_handler(RateLimited, _on_rate_limited)

"""CORS for the edge: listed origins with credentials, answered as Starlette's CORSMiddleware did.

The edge (core/edge.py) calls this instead of a middleware of its own: Starlette's (1.10) wrapped
`send` and built a `Headers` view of the request on every request, an Origin header or not
(2-3% of GET /users/me's CPU under wrk, py-spy). Here a request without Origin costs the one
header scan the edge already does, and its answer one `Vary: Origin`.

What a browser is told is unchanged, header by header and in order (tests/core/test_cors.py
pins it, and passed against Starlette's middleware): simple requests get `Vary: Origin`; with an
Origin also `Access-Control-Allow-Credentials` and `-Expose-Headers`, and the origin itself in
`Access-Control-Allow-Origin` when it is listed; a preflight (OPTIONS + Origin +
Access-Control-Request-Method) gets 200 "OK" or 400 "Disallowed CORS <what failed>".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Starlette's list for allow_methods=["*"], in its order (the Allow-Methods header shows it).
ALL_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY")
MAX_AGE_S = 600

_VARY = b"vary"
_ALLOW_ORIGIN = b"access-control-allow-origin"
_ALLOW_CREDENTIALS = (b"access-control-allow-credentials", b"true")
_PREFLIGHT_VARY = (
    _VARY,
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
    b"Access-Control-Request-Private-Network",
)
_REQUEST_METHOD = b"access-control-request-method"
_REQUEST_HEADERS = b"access-control-request-headers"
_REQUEST_PRIVATE_NETWORK = b"access-control-request-private-network"
_TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")

type RawHeaders = list[tuple[bytes, bytes]]


def _set(headers: RawHeaders, name: bytes, value: bytes) -> None:
    """Set one header: the first of that name keeps its place, later ones go (as Starlette's
    `MutableHeaders.__setitem__`)."""
    found = [index for index, (key, _) in enumerate(headers) if key == name]
    for index in reversed(found[1:]):
        del headers[index]
    if found:
        headers[found[0]] = (name, value)
    else:
        headers.append((name, value))


class CorsPolicy:
    """Origins compared exactly (scheme, host and port, no trailing slash), every method and
    request header allowed, credentials allowed, so `*` is refused: a browser ignores
    `Access-Control-Allow-Origin: *` on a credentialed request."""

    def __init__(self, origins: Iterable[str], *, expose_headers: Sequence[str] = ()) -> None:
        self.origins = frozenset(origin.encode("latin-1") for origin in origins)
        if b"*" in self.origins:
            raise ValueError("CORS origins must be listed: '*' is refused with credentials")
        self.simple_headers: tuple[tuple[bytes, bytes], ...] = (_ALLOW_CREDENTIALS,)
        if expose_headers:
            exposed = ", ".join(expose_headers).encode("latin-1")
            self.simple_headers += ((b"access-control-expose-headers", exposed),)
        self.methods = frozenset(method.encode() for method in ALL_METHODS)
        self.preflight_headers = (
            _PREFLIGHT_VARY,
            (b"access-control-allow-methods", ", ".join(ALL_METHODS).encode()),
            (b"access-control-max-age", str(MAX_AGE_S).encode()),
            _ALLOW_CREDENTIALS,
        )

    def add_headers(self, headers: RawHeaders, origin: bytes | None) -> None:
        """The CORS headers of an answer from the app, added to its headers in place."""
        if origin is not None:
            for name, value in self.simple_headers:
                _set(headers, name, value)
            if origin in self.origins:
                _set(headers, _ALLOW_ORIGIN, origin)
        if any(name == _VARY for name, _ in headers):
            varies = [value for name, value in headers if name == _VARY]
            _set(headers, _VARY, b", ".join([*varies, b"Origin"]))
        else:
            headers.append((_VARY, b"Origin"))

    def preflight(
        self, origin: bytes, request_headers: RawHeaders
    ) -> tuple[int, bytes, RawHeaders]:
        """Status, body and headers answering a preflight (the caller saw Origin and
        Access-Control-Request-Method)."""
        method = requested = private_network = None
        for name, value in request_headers:  # the first of each, as Starlette's Headers.get
            if name == _REQUEST_METHOD and method is None:
                method = value
            elif name == _REQUEST_HEADERS and requested is None:
                requested = value
            elif name == _REQUEST_PRIVATE_NETWORK and private_network is None:
                private_network = value
        headers = list(self.preflight_headers)
        failures = []
        if origin in self.origins:
            headers.append((_ALLOW_ORIGIN, origin))
        else:
            failures.append("origin")
        if method not in self.methods:
            failures.append("method")
        if requested is not None:  # every header is allowed: the requested ones are mirrored
            headers.append((b"access-control-allow-headers", requested))
        if private_network is not None:  # Private Network Access is not allowed
            failures.append("private-network")
        body = f"Disallowed CORS {', '.join(failures)}".encode() if failures else b"OK"
        headers += [(b"content-length", str(len(body)).encode()), _TEXT_PLAIN]
        return (400 if failures else 200), body, headers


def is_preflight(request_headers: RawHeaders) -> bool:
    """For an OPTIONS request with an Origin: whether it asks a preflight question."""
    return any(name == _REQUEST_METHOD for name, _ in request_headers)

"""The baseline for the health-check target: a bare FastAPI app under the same uvicorn settings.

It answers the health-check path with `true`, exactly as Keelson does, with no middleware, no
database, no logging and no metrics, so "Keelson's health check / this" is the cost of Keelson's
own request pipeline. bench.py runs it as one process on 127.0.0.1:

    uv run python load-tests/hello_app.py --port 8100
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.get("/api/v1/utils/health-check/")
async def health_check() -> bool:
    return True


@app.get("/")
async def hello() -> dict[str, str]:
    return {"message": "hello"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    # The same uvicorn.Config as `keelson serve` (service/cli.py): one process, uvicorn's "auto"
    # loop and parser (uvloop + httptools, both installed), no access log, no Server header.
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="on",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()

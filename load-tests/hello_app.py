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
    # Keep these in step with `keelson serve` (service/cli.py): one process, uvloop, httptools,
    # no per-request access log.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        proxy_headers=True,
        workers=1,
    )


if __name__ == "__main__":
    main()

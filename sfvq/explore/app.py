"""The web app behind ``sfvq explore``: a local page to walk a run's curve, pick segments and use them.

An :class:`~sfvq.explore.explorer.Explorer` (the run and its rendering service) does the work; this module
is the HTTP side: :func:`create_app` wraps it in a Starlette app, the page and its assets from ``static/``
(nothing from a CDN) and a JSON/PNG API under ``/api``:

==========================================  ===============================================================
``GET  /api/info``                           run, network, space, bitrates, corners, layers, limits
``GET  /api/image?bits=b&t=x``               PNG of the curve point at fractional index t in [0, K-1]
``GET  /api/corner?bits=b&index=i``          PNG of corner i (all corners of a bitrate rendered once, cached)
``GET  /api/map?bits=b``                     the panoptic map of a bitrate: labelled grid PNG (cached)
``GET  /api/segments?bits=b``                every segment's length, std of the data along it and usage
``GET  /api/edit?bits&segment&seeds&sigma[&layers]``  PNG grid: rows = seeds, columns = -sigma, 0, +sigma
``GET  /api/directions``                     the run's saved directions
``POST /api/directions``                     save segment ``bits:segment`` under a name, with a layer range
``GET  /api/augment``                        finished augmentation batches in ``<run>/augment/``
``POST /api/augment``                        write a batch along a segment into ``<run>/augment/<name>/``
``GET  /api/augment/<name>/<file>``          one file of a batch (preview.png, labels.csv, images/...)
==========================================  ===============================================================

Safety: every parameter is checked (:mod:`sfvq.explore.params`: type, bounds, a strict name pattern;
unknown or repeated parameters are refused) and a bad request gets a 4xx JSON ``{"error": ..., "param":
...}``. Files are read and
written only inside the run directory: names never become paths unchecked, and every path is resolved
(symlinks included) and must lie inside the resolved run directory. POSTs need a JSON content type (a
cross-site form cannot send one without a CORS preflight, which this server never grants), and requests
whose Host header is not the bound host are refused (DNS rebinding).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sfvq.explore.explorer import Explorer
from sfvq.explore.params import (
    AUGMENT_MAX,
    BODY_MAX,
    JITTER_MAX,
    MAX_SEEDS,
    NAME_RE,
    SEED_MAX,
    SIGMA_MAX,
    ApiError,
    parse_float,
    parse_int,
    parse_layers,
    parse_name,
    parse_seeds,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_MEDIA = {".png": "image/png", ".csv": "text/csv; charset=utf-8", ".json": "application/json"}


# ---------------------------------------------------------------------------------------------- requests
def query(request: Request, *allowed: str) -> dict[str, str]:
    """The query parameters, each at most once and each one of ``allowed``, else a 400."""
    out: dict[str, str] = {}
    for k, v in request.query_params.multi_items():
        if k not in allowed:
            raise ApiError(400, f"unknown parameter {k[:40]!r}; this endpoint takes {sorted(allowed)}", k)
        if k in out:
            raise ApiError(400, f"parameter {k!r} is given more than once", k)
        out[k] = v
    return out


def required(q: dict[str, Any], key: str) -> Any:
    """``q[key]``, else a 400 naming the missing parameter."""
    if key not in q:
        raise ApiError(400, f"missing parameter {key!r}", key)
    return q[key]


async def body(request: Request, *allowed: str) -> dict[str, Any]:
    """A POST's JSON object: JSON content type, same origin, at most :data:`BODY_MAX` bytes, fields among
    ``allowed``; else a 4xx."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "send the request body as JSON (Content-Type: application/json)")
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        raise ApiError(403, f"cross-origin request from {origin[:80]!r} refused")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > BODY_MAX):
        raise ApiError(413, f"request body larger than {BODY_MAX} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > BODY_MAX:
            raise ApiError(413, f"request body larger than {BODY_MAX} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(data).__name__}")
    for k in data:
        if k not in allowed:
            raise ApiError(400, f"unknown field {k[:40]!r}; this endpoint takes {sorted(allowed)}", k)
    return data


def flag(data: dict[str, Any], key: str) -> bool:
    """A JSON boolean field (default false), else a 400."""
    v = data.get(key, False)
    if not isinstance(v, bool):
        raise ApiError(400, f"{key} must be true or false", key)
    return v


def png(data: bytes, started: float) -> Response:
    """A PNG response, not cached, with the time it took in ``X-Render-Ms``."""
    ms = (time.perf_counter() - started) * 1000
    return Response(data, media_type="image/png", headers={**NO_STORE, "X-Render-Ms": f"{ms:.1f}"})


def sync(fn: Callable[[Request], Response]) -> Callable[[Request], Any]:
    """Run a blocking endpoint in the thread pool (renders must not block the event loop)."""

    async def endpoint(request: Request) -> Response:
        return await run_in_threadpool(fn, request)

    endpoint.__name__ = fn.__name__
    return endpoint


# ---------------------------------------------------------------------------------------------- endpoints
class Endpoints:
    """The API's endpoints on one explorer: each checks its request, calls the explorer, answers."""

    def __init__(self, explorer: Explorer) -> None:
        self.ex = explorer

    async def index(self, request: Request) -> Response:
        query(request)
        return FileResponse(STATIC_DIR / "index.html", headers=NO_STORE)

    def info(self, request: Request) -> Response:
        query(request)
        return JSONResponse(self.ex.info(), headers=NO_STORE)

    def image(self, request: Request) -> Response:
        started = time.perf_counter()
        q = query(request, "bits", "t")
        b = self.ex.check_bits(required(q, "bits"))
        t = parse_float(required(q, "t"), "t", 0.0, self.ex.corners(b) - 1)
        return png(self.ex.image_png(b, t), started)

    def corner(self, request: Request) -> Response:
        started = time.perf_counter()
        q = query(request, "bits", "index")
        b = self.ex.check_bits(required(q, "bits"))
        i = parse_int(required(q, "index"), "index", 0, self.ex.corners(b) - 1)
        return png(self.ex.corner_png(b, i), started)

    def panoptic(self, request: Request) -> Response:
        started = time.perf_counter()
        q = query(request, "bits")
        return png(self.ex.map_png(self.ex.check_bits(required(q, "bits"))), started)

    def segments(self, request: Request) -> Response:
        q = query(request, "bits")
        b = self.ex.check_bits(required(q, "bits"))
        data = self.ex.segments(b)
        return JSONResponse({"bits": b, **data, "sigma_unit": "std" if self.ex.X is not None else "raw"})

    def edit(self, request: Request) -> Response:
        started = time.perf_counter()
        q = query(request, "bits", "segment", "seeds", "sigma", "layers")
        b = self.ex.check_bits(required(q, "bits"))
        seg = self.ex.check_segment(b, required(q, "segment"))
        seeds = parse_seeds(required(q, "seeds"))
        sigma = parse_float(required(q, "sigma"), "sigma", -SIGMA_MAX, SIGMA_MAX)
        layers = parse_layers(q.get("layers"), self.ex.num_ws)
        return png(self.ex.edit_png(b, seg, seeds, sigma, layers), started)

    def directions_get(self, request: Request) -> Response:
        query(request)
        return JSONResponse({"directions": self.ex.directions()}, headers=NO_STORE)

    async def directions_post(self, request: Request) -> Response:
        query(request)
        data = await body(request, "name", "bits", "segment", "layers", "sign", "overwrite")
        name = parse_name(required(data, "name"))
        b = self.ex.check_bits(required(data, "bits"), json=True)
        seg = self.ex.check_segment(b, required(data, "segment"), json=True)
        layers = parse_layers(data.get("layers"), self.ex.num_ws)
        sign = data.get("sign", 1)
        if isinstance(sign, bool) or sign not in (1, -1):
            raise ApiError(400, "sign must be 1 or -1", "sign")
        overwrite = flag(data, "overwrite")
        out = await run_in_threadpool(self.ex.save_direction, name, b, seg, layers, int(sign), overwrite)
        return JSONResponse(out, status_code=201)

    def augment_get(self, request: Request) -> Response:
        query(request)
        return JSONResponse({"batches": self.ex.augment_batches()}, headers=NO_STORE)

    async def augment_post(self, request: Request) -> Response:
        query(request)
        data = await body(request, "name", "bits", "segment", "n", "seed", "jitter", "overwrite")
        name = parse_name(required(data, "name"))
        b = self.ex.check_bits(required(data, "bits"), json=True)
        seg = self.ex.check_segment(b, required(data, "segment"), json=True)
        n = parse_int(data.get("n", 32), "n", 1, AUGMENT_MAX, json=True)
        seed = parse_int(data.get("seed", 0), "seed", 0, SEED_MAX, json=True)
        jitter = parse_float(data.get("jitter", 0.0), "jitter", 0.0, JITTER_MAX, json=True)
        overwrite = flag(data, "overwrite")
        out = await run_in_threadpool(self.ex.augment, name, b, seg, n, seed, jitter, overwrite)
        return JSONResponse(out, status_code=201)

    def augment_file(self, request: Request) -> Response:
        query(request)
        path = self.ex.augment_file(request.path_params["name"], request.path_params["file"])
        return FileResponse(path, media_type=_MEDIA[path.suffix], headers=NO_STORE)

    def routes(self) -> list[Any]:
        """Every route of the app (blocking endpoints run in the thread pool)."""
        return [
            Route("/", self.index),
            Route("/api/info", sync(self.info)),
            Route("/api/image", sync(self.image)),
            Route("/api/corner", sync(self.corner)),
            Route("/api/map", sync(self.panoptic)),
            Route("/api/segments", sync(self.segments)),
            Route("/api/edit", sync(self.edit)),
            Route("/api/directions", sync(self.directions_get), methods=["GET"]),
            Route("/api/directions", self.directions_post, methods=["POST"]),
            Route("/api/augment", sync(self.augment_get), methods=["GET"]),
            Route("/api/augment", self.augment_post, methods=["POST"]),
            Route("/api/augment/{name}/{file:path}", sync(self.augment_file)),
            Mount("/static", StaticFiles(directory=STATIC_DIR)),
        ]


# ---------------------------------------------------------------------------------------------- errors
async def api_error(request: Request, exc: Exception) -> Response:
    """A refused request: its status and ``{"error", "param"}``."""
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=NO_STORE)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, wrong method) in the API's JSON shape."""
    assert isinstance(exc, HTTPException)
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    return JSONResponse({"error": message, "param": None}, status_code=exc.status_code, headers=NO_STORE)


async def server_error(request: Request, exc: Exception) -> Response:
    """Anything else: a 500 naming the exception."""
    return JSONResponse(
        {"error": f"internal error: {type(exc).__name__}: {exc}", "param": None}, status_code=500
    )


# ---------------------------------------------------------------------------------------------- app
def create_app(explorer: Explorer, allowed_hosts: list[str] | None = None) -> Any:
    """The Starlette app serving ``explorer``. ``allowed_hosts``: Host header values accepted
    (default: loopback names only); ``["*"]`` accepts any."""
    hosts = allowed_hosts or ["127.0.0.1", "localhost", "[::1]", "::1"]
    return Starlette(
        routes=Endpoints(explorer).routes(),
        middleware=[Middleware(Guard, allowed_hosts=hosts)],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error},
    )


class Guard:
    """ASGI middleware: refuse requests whose Host header is not one of ``allowed_hosts`` (a 400 JSON
    error; guards against DNS rebinding), and give every response a Content-Security-Policy that allows
    nothing but this server, and ``nosniff``."""

    CSP = (
        b"default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'"
    )

    def __init__(self, app: Any, allowed_hosts: list[str]) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.hosts = {h.lower() for h in allowed_hosts}

    def _host_ok(self, scope: dict) -> bool:
        if self.any_host:
            return True
        host = next((v.decode("latin-1").lower() for k, v in scope.get("headers", []) if k == b"host"), "")
        if host.startswith("["):  # "[::1]:8000" -> "[::1]"
            name = host.split("]")[0] + "]"
        else:  # "127.0.0.1:8000" -> "127.0.0.1"
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return name in self.hosts

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                drop = b"x-content-type-options"
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != drop]
                headers += [(b"content-security-policy", self.CSP), (drop, b"nosniff")]
                message = {**message, "headers": headers}
            await send(message)

        if not self._host_ok(scope):
            error = {"error": "this server answers only requests addressed to the host it listens on",
                     "param": "Host"}  # fmt: skip
            await JSONResponse(error, status_code=400)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------------------------------------- serving
def bind(host: str, port: int) -> Any:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    import socket

    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    family, kind, proto, _, address = infos[0]
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and without it every
    # keep-alive response (headers, then body) waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def url_of(sock: Any) -> str:
    """``http://host:port/`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(app: Any, sock: Any, log_level: str = "warning") -> None:
    """Serve ``app`` on the bound socket until interrupted (uvicorn, one process)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, lifespan="off", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


__all__ = [
    "AUGMENT_MAX",
    "MAX_SEEDS",
    "NAME_RE",
    "SIGMA_MAX",
    "ApiError",
    "Endpoints",
    "Explorer",
    "Guard",
    "bind",
    "create_app",
    "serve",
    "url_of",
]

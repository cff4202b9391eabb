"""The web app behind ``sfvq explore``: a local page to walk a run's curve, pick segments and use them.

An :class:`~sfvq.explore.explorer.Explorer` (the run and its rendering service) does the work; this module
is the HTTP side: :func:`create_app` wraps it in a Starlette app, the page and its assets from ``static/``
(nothing from a CDN) and a JSON/PNG API under ``/api``:

==========================================  ===============================================================
``GET  /api/info``                           run, network, space, bitrates, corners, layers, limits
``GET  /api/image?bits=b&t=x``               PNG of the curve point at fractional index t in [0, K-1]
``GET  /api/corner?bits=b&index=i``          PNG of corner i (all corners of a bitrate rendered once, cached)
``GET  /api/map?bits=b``                     the panoptic map of a bitrate: labelled grid PNG (cached)
``GET  /api/segments?bits=b``                every segment's length, std of the data along it, usage and
                                             annotation (annotations.json: summary, locality, layers)
``GET  /api/edit?bits&segment&seeds&sigma[&layers]``  PNG grid: rows = seeds, columns = -sigma, 0, +sigma
                                             (``layers=auto``: the segment's annotated range)
``GET  /api/heat?bits=b&segment=i``          the segment's heat map from ``sfvq annotate`` (PNG)
``GET  /api/directions``                     the run's saved directions
``POST /api/directions``                     save segment ``bits:segment`` under a name, with a layer range
``GET  /api/augment``                        finished augmentation batches in ``<run>/augment/``
``POST /api/augment``                        write a batch along a segment into ``<run>/augment/<name>/``
``GET  /api/augment/<name>/<file>``          one file of a batch (preview.png, labels.csv, images/...)
``/api/photos``, ``/api/photos/<id>/...``    your own images: upload, place, edit (:mod:`.photos`)
==========================================  ===============================================================

Safety: every parameter is checked (:mod:`sfvq.explore.params`: type, bounds, a strict name pattern;
unknown or repeated parameters are refused) and a bad request gets a 4xx JSON ``{"error": ..., "param":
...}``. Files are read and
written only inside the run directory: names never become paths unchecked, and every path is resolved
(symlinks included) and must lie inside the resolved run directory. POSTs need a JSON content type (a
cross-site form cannot send one without a CORS preflight, which this server never grants), and requests
whose Host header (or Origin, when sent) is not a name of the allow-list are refused (DNS rebinding),
whatever address the server listens on (:func:`allowed_hosts_for`).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
from sfvq.explore.photos import routes as photo_routes

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
    except RecursionError as e:  # "[[[[...": the parser recurses once per level
        raise ApiError(400, "the body is not valid JSON: nested too deeply") from e
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
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
        layers = self._layers(q.get("layers"), b, seg)
        return png(self.ex.edit_png(b, seg, seeds, sigma, layers), started)

    def _layers(self, text: Any, bits: int, segment: int) -> tuple[int, int] | None:
        """A layers parameter: ``auto`` (the segment's annotated range) or an inclusive range."""
        if isinstance(text, str) and text.strip().lower() == "auto":
            return self.ex.auto_layers(bits, segment)
        return parse_layers(text, self.ex.num_ws)

    def heat(self, request: Request) -> Response:
        q = query(request, "bits", "segment")
        b = self.ex.check_bits(required(q, "bits"))
        seg = self.ex.check_segment(b, required(q, "segment"))
        return FileResponse(self.ex.heat_path(b, seg), media_type="image/png", headers=NO_STORE)

    def directions_get(self, request: Request) -> Response:
        query(request)
        return JSONResponse({"directions": self.ex.directions()}, headers=NO_STORE)

    async def directions_post(self, request: Request) -> Response:
        query(request)
        data = await body(request, "name", "bits", "segment", "layers", "sign", "overwrite")
        name = parse_name(required(data, "name"))
        b = self.ex.check_bits(required(data, "bits"), json=True)
        seg = self.ex.check_segment(b, required(data, "segment"), json=True)
        layers = await run_in_threadpool(self._layers, data.get("layers"), b, seg)
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
            Route("/api/heat", sync(self.heat)),
            Route("/api/directions", sync(self.directions_get), methods=["GET"]),
            Route("/api/directions", self.directions_post, methods=["POST"]),
            Route("/api/augment", sync(self.augment_get), methods=["GET"]),
            Route("/api/augment", self.augment_post, methods=["POST"]),
            Route("/api/augment/{name}/{file:path}", sync(self.augment_file)),
            *photo_routes(self.ex),
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
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
_HOST_NAME_RE = re.compile(r"\A(\[[0-9a-f:.]+\]|[0-9a-z_](?:[0-9a-z_.\-]{0,251}[0-9a-z_])?|[0-9a-f:.]+)\Z")


def check_host_name(name: str) -> str:
    """A host name or address as a Host header names it (lower case, without port), else ValueError; an
    IPv6 address is returned in brackets, as Host headers carry it."""
    text = str(name).lower()
    if ":" in text and not text.startswith("["):
        try:
            text = f"[{ipaddress.IPv6Address(text)}]"
        except ValueError:
            raise ValueError(f"{name!r} is not a host name or address (no ports, no wildcards)") from None
    if not _HOST_NAME_RE.match(text) or "*" in text:
        raise ValueError(f"{name!r} is not a host name or address (no ports, no wildcards)")
    return text


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP address, or ``localhost``) is this machine only."""
    text = address.strip("[]").lower()
    if text == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(
    bind_host: str, bound_address: str | None = None, extra: Iterable[str] = ()
) -> list[str]:
    """The names requests may address (Host, Origin) when the server listens on ``bind_host``: the
    loopback names, the name and address listened on, for a wildcard address (0.0.0.0, ::) this machine's
    host names and their addresses, and ``extra`` (``--allow-host``). Never a wildcard."""
    names = list(LOOPBACK_NAMES)
    wildcard = bind_host in ("", "0.0.0.0", "::", "[::]")
    candidates = [] if wildcard else [bind_host]
    if bound_address and not wildcard:
        candidates.append(bound_address)
    if wildcard:
        try:
            host = socket.gethostname()
            candidates += [host, socket.getfqdn()]
            candidates += [str(info[4][0]) for info in socket.getaddrinfo(host, None)]
        except OSError:
            pass
    candidates += list(extra)
    for c in candidates:
        try:
            name = check_host_name(c)
        except ValueError:
            continue
        for form in (name, name.strip("[]")) if name.startswith("[") else (name,):
            if form not in names:
                names.append(form)
    return names


def create_app(explorer: Explorer, allowed_hosts: list[str] | None = None) -> Any:
    """The Starlette app serving ``explorer``. ``allowed_hosts``: the names a request's Host header (and
    Origin, when sent) may name (default: loopback names only; see :func:`allowed_hosts_for`); there is
    no wildcard."""
    hosts = allowed_hosts or list(LOOPBACK_NAMES)
    if any("*" in h for h in hosts):
        raise ValueError("allowed hosts are names; a wildcard would turn the DNS-rebinding guard off")
    return Starlette(
        routes=Endpoints(explorer).routes(),
        middleware=[Middleware(Guard, allowed_hosts=hosts)],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error},
    )


class Guard:
    """ASGI middleware: refuse requests whose Host header is not one of ``allowed_hosts`` (a 400 JSON
    error) or whose Origin header, when sent, does not name one of them (403); this guards against DNS
    rebinding whatever address the server listens on. Every response gets a Content-Security-Policy that
    allows nothing but this server, and ``nosniff``."""

    CSP = (
        b"default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'"
    )

    def __init__(self, app: Any, allowed_hosts: list[str]) -> None:
        if any("*" in h for h in allowed_hosts):
            raise ValueError("allowed hosts are names; a wildcard would turn the DNS-rebinding guard off")
        self.app = app
        self.hosts = {h.lower() for h in allowed_hosts}

    @staticmethod
    def _header(scope: dict, key: bytes) -> str | None:
        return next((v.decode("latin-1").lower() for k, v in scope.get("headers", []) if k == key), None)

    @staticmethod
    def _name(host: str) -> str:
        if host.startswith("["):  # "[::1]:8000" -> "[::1]"
            return host.split("]")[0] + "]"
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host  # "127.0.0.1:8000" -> "127.0.0.1"

    def _host_ok(self, scope: dict) -> bool:
        return self._name(self._header(scope, b"host") or "") in self.hosts

    def _origin_ok(self, scope: dict) -> bool:
        origin = self._header(scope, b"origin")
        if origin is None:
            return True
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:
            return False
        return bool(netloc) and self._name(netloc) in self.hosts

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
            error = {"error": "this server answers only requests addressed to the host it listens on "
                     "(add names with --allow-host)", "param": "Host"}  # fmt: skip
            await JSONResponse(error, status_code=400)(scope, receive, send_with_headers)
            return
        if not self._origin_ok(scope):
            origin = (self._header(scope, b"origin") or "")[:80]
            error = {"error": f"cross-origin request from {origin!r} refused: not a name of this server",
                     "param": None}  # fmt: skip
            await JSONResponse(error, status_code=403)(scope, receive, send_with_headers)
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
    "LOOPBACK_NAMES",
    "ApiError",
    "Endpoints",
    "Explorer",
    "Guard",
    "allowed_hosts_for",
    "bind",
    "check_host_name",
    "create_app",
    "is_loopback",
    "serve",
    "url_of",
]

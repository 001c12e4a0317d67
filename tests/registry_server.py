"""A real OCI registry for tests: CNCF distribution (Debian's ``docker-registry``) on 127.0.0.1.

``RegistryServer`` writes a config into a temp folder (filesystem storage there, a free loopback port,
optional htpasswd basic auth with bcrypt entries), starts ``docker-registry serve``, waits until
``/v2/`` answers, and stops it again. Tests never skip for lack of the binary: they fail and say how
to install it (``.ci/install-system-deps``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

BINARY = "docker-registry"
INSTALL_HINT = f"`{BINARY}` is not installed; run `.ci/install-system-deps` as root (it apt-installs it)."


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def htpasswd_line(user: str, password: str) -> str:
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"


class RegistryServer:
    """One ``docker-registry serve`` process; ``host`` is ``127.0.0.1:PORT``, ``root`` its storage."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None, port: int | None = None) -> None:
        binary = shutil.which(BINARY)
        if binary is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.binary = binary
        self.workdir = workdir
        self.root = workdir / "storage"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.users = users or {}
        self.proc: subprocess.Popen | None = None
        self._write_config()

    def _write_config(self) -> None:
        auth = ""
        if self.users:
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text("".join(htpasswd_line(u, p) + "\n" for u, p in self.users.items()))
            auth = f"auth:\n  htpasswd:\n    realm: exporter-tests\n    path: {htpasswd}\n"
        self.config = self.workdir / "config.yml"
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n  secret: exporter-tests-secret\n" + auth
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self, timeout: float = 15.0) -> RegistryServer:
        """Start the registry (again, on the same port and storage) and wait for ``/v2/``."""
        log = open(self.workdir / "registry.log", "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.proc = subprocess.Popen(
            [self.binary, "serve", str(self.config)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{BINARY} exited with {self.proc.returncode}: {self.log_tail()}", pytrace=False)
            try:
                if requests.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"{BINARY} did not answer on {self.host} within {timeout}s: {self.log_tail()}", pytrace=False)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self) -> str:
        path = self.workdir / "registry.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (for tampering tests)."""
        hexd = digest.split(":", 1)[1]
        return self.root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def tags(self, repo: str, auth: tuple[str, str] | None = None) -> list[str]:
        resp = requests.get(f"{self.url}/v2/{repo}/tags/list", auth=auth, timeout=5)
        if resp.status_code == 404:
            return []
        resp.raise_for_status()
        return resp.json().get("tags") or []


AUTH_USER, AUTH_PASSWORD = "publisher", "s3cr3t-Pa55-do-not-print"


@contextlib.contextmanager
def running_registry(workdir: Path, users: dict[str, str] | None = None) -> Iterator[RegistryServer]:
    """Start a registry in ``workdir`` (htpasswd auth when ``users`` is given) and always stop it."""
    server = RegistryServer(workdir, users)
    try:
        yield server.start()
    finally:
        server.stop()

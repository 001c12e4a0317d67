"""OCI references (``oci://HOST[:PORT]/REPO[:TAG][@sha256:...]``) and registry credentials.

Credentials come from ``EXPORTER_REGISTRY_USER``/``EXPORTER_REGISTRY_PASSWORD`` or the docker config file;
``Credentials`` never shows them in a repr, and a reference holding ``user:pass@`` is refused unechoed.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from exporter.errors import UsageError

USER_ENV, PASSWORD_ENV = "EXPORTER_REGISTRY_USER", "EXPORTER_REGISTRY_PASSWORD"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_DIGEST = DIGEST_RE
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_HOST = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")
_CRED_HINT = f"Set {USER_ENV} and {PASSWORD_ENV}, or log in with `docker login HOST`."


# --------------------------------------------------------------------------------------------- references


@dataclass(frozen=True)
class Reference:
    """``oci://HOST[:PORT]/REPO[:TAG][@sha256:...]``, parsed and checked."""

    host: str  # host[:port] as written (IPv6 in brackets)
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, url: str) -> Reference:
        hint = "Write it as oci://HOST[:PORT]/REPO[:TAG], e.g. oci://127.0.0.1:5000/team/model:v1."
        if not url.startswith("oci://"):
            raise UsageError("a registry reference must start with oci://.", hint)
        host, _, path = url[len("oci://") :].partition("/")
        if "@" in host:  # never echo it: it holds credentials
            raise UsageError("credentials inside the registry reference are refused.", _CRED_HINT)
        if not _HOST.match(host) or not path:
            raise UsageError("the registry reference has no valid HOST and REPO.", hint)
        path, _, digest = path.partition("@")
        repo, tag = path, None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            repo, tag = path[: len(path) - len(last)] + last.split(":", 1)[0], last.split(":", 1)[1]
        if not _REPO.match(repo):
            raise UsageError(f"{repo!r} is not a valid repository name (lowercase, digits, . _ - /).", hint)
        if tag is not None and not _TAG.match(tag):
            raise UsageError(f"{tag!r} is not a valid tag.", "Use letters, digits, '.', '_' and '-' (max 128).")
        if digest and not _DIGEST.match(digest):
            raise UsageError(f"{digest!r} is not a sha256 digest.", "Write it as @sha256:<64 hex>.")
        return cls(host, repo, tag, digest or None)

    @property
    def manifest_ref(self) -> str:
        """What the manifest is fetched by: the digest, else the tag (UsageError when it names neither)."""
        named = self.digest or self.tag
        if named is None:
            raise UsageError(f"{self} names no tag or digest.", "Write oci://HOST/REPO:TAG or …/REPO@sha256:….")
        return named

    @property
    def hostname(self) -> str:
        return self.host.rsplit(":", 1)[0].strip("[]") if not self.host.endswith("]") else self.host.strip("[]")

    def __str__(self) -> str:
        tail = (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")
        return f"oci://{self.host}/{self.repository}{tail}"


def is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """A user name and password; ``repr`` shows neither."""

    username: str = field(repr=False)
    password: str = field(repr=False)


def _docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return (Path(base) if base else Path.home() / ".docker") / "config.json"


def find_credentials(host: str) -> Credentials | None:
    """Credentials for ``host`` (host[:port]) from the environment, else the docker config file."""
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if user or password:
        if not (user and password):
            raise UsageError(f"only one of {USER_ENV} and {PASSWORD_ENV} is set.", "Set both, or neither.")
        return Credentials(user, password)
    path = _docker_config_path()
    if not path.is_file():
        return None
    from exporter.user_files import read_user_json

    try:
        auths = read_user_json(path, what="docker config", max_bytes=1_000_000).get("auths") or {}
    except (UsageError, AttributeError) as exc:
        raise UsageError(f"cannot read docker config {path}.", "Fix or remove that file.") from exc
    for key, entry in auths.items():
        bare = re.sub(r"^[a-z]+://", "", key).split("/", 1)[0]
        if bare != host or not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]))
        try:
            user, sep, password = base64.b64decode(entry.get("auth", ""), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"the docker config entry for {host} in {path} is malformed.", _CRED_HINT) from exc
        if sep and user:
            return Credentials(user, password)
    return None

"""Publish and pull variants as OCI artifacts, with every digest checked end to end.

Protocol: the OCI distribution API over ``requests`` (blob HEAD/POST/PUT/GET, manifest HEAD/GET/PUT),
using oras-py's media-type constants and manifest schema. oras's own ``push``/``pull`` are not used:
they retry with fixed multi-second sleeps, cannot compare a tag's current digest before pushing, read
whole files into memory and trust layer titles as paths. Here:

- one layer per file (digest = the file's sha256 from the manifest, ``org.opencontainers.image.title``
  = its artifact-relative path), config = the manifest narrowed to the variant, our own artifact type;
- blobs first, the manifest (and so the tag) last: a failed publish never leaves a tag behind;
- same bytes again is a no-op (compared by manifest digest); another digest under the tag is refused
  unless ``force``;
- connection errors, 429 and 5xx are retried with exponential backoff, then one ``RegistryError``;
- credentials (``EXPORTER_REGISTRY_USER``/``EXPORTER_REGISTRY_PASSWORD`` or the docker config file)
  are sent only after a 401 challenge, only to the registry host, and never appear in any message.
  Plain HTTP only for loopback hosts unless ``insecure``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import jsonschema
import oras.defaults
import oras.schemas
import requests

from exporter import manifest as mf
from exporter import outdir
from exporter.errors import IntegrityError, OutputError, RegistryError, UsageError
from exporter.fsutil import staged_dir
from exporter.package import (
    check_layout,
    manifest_bytes,
    parse_narrowed_manifest,
    require_publishable,
    select_variants,
    variant_files,
)

ARTIFACT_TYPE = "application/vnd.exporter.model.v1"
CONFIG_MEDIA_TYPE = "application/vnd.exporter.manifest.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.exporter.file.v1"
MANIFEST_MEDIA_TYPE = oras.defaults.default_manifest_media_type
TITLE = oras.defaults.annotation_title
ANNOTATION = "dev.exporter."
USER_ENV, PASSWORD_ENV = "EXPORTER_REGISTRY_USER", "EXPORTER_REGISTRY_PASSWORD"

_MAX_JSON = 16 << 20  # manifests and config blobs larger than this are refused
_CHUNK = 1 << 20
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
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
    try:
        auths = json.loads(path.read_text("utf-8")).get("auths") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
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


# --------------------------------------------------------------------------------------------- transport


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per operation and the exponential backoff between them (seconds)."""

    attempts: int = 4
    first_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 8.0


class _Transient(Exception):
    """A failure worth retrying (connection trouble, 429, 5xx); ``reason`` is one short phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _short_reason(exc: BaseException) -> str:
    """``connection refused`` rather than urllib3's multi-line repr (which never holds credentials anyway)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        for arg in getattr(seen, "args", ()):
            if isinstance(arg, BaseException):
                inner = _short_reason(arg)
                if inner != type(arg).__name__:
                    return inner
        seen = seen.__cause__ or seen.__context__
    text = str(exc).lower()
    for phrase in ("connection refused", "timed out", "name or service not known", "connection reset"):
        if phrase in text:
            return phrase
    return type(exc).__name__


def _oci_error(resp: requests.Response) -> str:
    try:
        err = resp.json()["errors"][0]
        return f"{err.get('code', '')}: {err.get('message', '')}".strip(": ")[:200]
    except (ValueError, KeyError, IndexError, TypeError):
        return resp.reason or ""


class RegistryClient:
    """The OCI distribution API of one registry host: auth handshake, retries, digest-checked transfers."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None | Callable[[], Credentials | None] = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 300.0),
    ) -> None:
        self.host = host
        hostname = Reference(host, "x").hostname
        self.scheme = "http" if insecure or is_loopback(hostname) else "https"
        self._plain_ok = self.scheme == "http"
        self._creds_source = credentials if callable(credentials) else (lambda: credentials)
        self._creds: Credentials | None = None
        self._creds_loaded = False
        self._authz: str | None = None
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.session = requests.Session()
        if is_loopback(hostname):
            self.session.trust_env = False  # no proxy (and no .netrc) for a registry on this machine

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()

    # -- plumbing

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}/v2/{path}"

    def _credentials(self) -> Credentials | None:
        if not self._creds_loaded:
            self._creds, self._creds_loaded = self._creds_source(), True
        return self._creds

    def _raw(self, method: str, url: str, headers: dict, body, stream: bool) -> requests.Response:
        if urlsplit(url).netloc != self.host:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        payload = body() if callable(body) else body
        try:
            return self.session.request(
                method, url, headers=headers, data=payload, stream=stream, timeout=self.timeout, allow_redirects=True
            )
        except requests.exceptions.SSLError as exc:
            raise RegistryError(
                f"TLS with registry {self.host} failed ({_short_reason(exc)}).",
                "Check the registry's certificate; use --insecure only for a plain-HTTP registry you trust.",
            ) from exc
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Transient(_short_reason(exc)) from exc
        except requests.RequestException as exc:
            raise RegistryError(f"request to registry {self.host} failed ({_short_reason(exc)}).") from exc
        finally:
            if hasattr(payload, "close"):
                payload.close()

    def _authorize(self, challenge: str) -> str:
        """Answer a 401 challenge (Basic or Bearer) with an Authorization header value."""
        creds = self._credentials()
        scheme, _, rest = challenge.partition(" ")
        scheme = scheme.lower()
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if scheme == "basic":
            if creds is None:
                raise RegistryError(f"registry {self.host} requires credentials.", _CRED_HINT)
            raw = f"{creds.username}:{creds.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if scheme == "bearer" and params.get("realm"):
            realm = params.pop("realm")
            parts = urlsplit(realm)
            if creds is not None and parts.scheme != "https" and not self._plain_ok:
                raise RegistryError(f"registry {self.host} asks for credentials over plain HTTP.", "Refusing.")
            auth = (creds.username, creds.password) if creds else None
            try:
                resp = self.session.get(realm, params=params, auth=auth, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise _Transient(_short_reason(exc)) from exc
            if resp.status_code in (401, 403):
                what = "refused the credentials" if creds else "requires credentials"
                raise RegistryError(f"token service of {self.host} {what} ({resp.status_code}).", _CRED_HINT)
            if resp.status_code >= 500:
                raise _Transient(f"token service answered HTTP {resp.status_code}")
            try:
                token = resp.json().get("token") or resp.json().get("access_token")
            except ValueError:
                token = None
            if not token:
                raise RegistryError(f"token service of {self.host} returned no token.", "Check the registry.")
            return f"Bearer {token}"
        raise RegistryError(f"registry {self.host} asks for an unsupported authentication scheme.", _CRED_HINT)

    def _send(self, method: str, url: str, *, headers=None, body=None, stream=False) -> requests.Response:
        """One request, answering an auth challenge once; raises _Transient for retryable failures."""
        headers = dict(headers or {})
        if self._authz:
            headers["Authorization"] = self._authz
        resp = self._raw(method, url, headers, body, stream)
        if resp.status_code == 401:
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            self._authz = None
            headers["Authorization"] = self._authorize(challenge)
            resp = self._raw(method, url, headers, body, stream)
            if resp.status_code == 401:
                resp.close()
                raise RegistryError(f"registry {self.host} refused the credentials (401 unauthorized).", _CRED_HINT)
            self._authz = headers["Authorization"]
        if resp.status_code == 403:
            raise RegistryError(
                f"registry {self.host} denied access ({_oci_error(resp)}).",
                "Check that these credentials may read/write this repository.",
            )
        if resp.status_code == 429 or resp.status_code >= 500:
            resp.close()
            raise _Transient(f"HTTP {resp.status_code}")
        return resp

    def _retrying(self, what: str, fn: Callable[[], object]):
        delay = self.retry.first_delay
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except _Transient as exc:
                if attempt == self.retry.attempts:
                    raise RegistryError(
                        f"{what} failed: registry {self.host}: {exc.reason} (gave up after {attempt} attempts).",
                        "Check that the registry is up and reachable, then retry; a failed publish leaves no tag.",
                    ) from exc
                time.sleep(delay)
                delay = min(delay * self.retry.factor, self.retry.max_delay)
        raise AssertionError("unreachable")

    @staticmethod
    def _expect(resp: requests.Response, ok: tuple[int, ...], what: str) -> requests.Response:
        if resp.status_code not in ok:
            detail = _oci_error(resp)
            resp.close()
            raise RegistryError(f"{what} failed: HTTP {resp.status_code} {detail}.", "Check the reference and retry.")
        return resp

    # -- operations

    def manifest_digest(self, repo: str, ref: str) -> str | None:
        """Digest of the manifest that ``ref`` names, or None if there is none."""

        def once():
            accept = {"Accept": MANIFEST_MEDIA_TYPE}
            resp = self._send("HEAD", self.url(f"{repo}/manifests/{ref}"), headers=accept)
            if resp.status_code == 404:
                return None
            self._expect(resp, (200,), f"looking up {repo}:{ref}")
            digest = resp.headers.get("Docker-Content-Digest")
            if digest:
                return digest
            resp = self._expect(self._send("GET", self.url(f"{repo}/manifests/{ref}"), headers=accept), (200,), "get")
            return "sha256:" + hashlib.sha256(resp.content).hexdigest()

        return self._retrying(f"looking up {repo}:{ref}", once)

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str]:
        """The manifest bytes ``ref`` names and their digest (checked when ``ref`` is a digest)."""

        def once():
            accept = {"Accept": MANIFEST_MEDIA_TYPE}
            resp = self._send("GET", self.url(f"{repo}/manifests/{ref}"), headers=accept, stream=True)
            if resp.status_code == 404:
                resp.close()
                raise RegistryError(f"{repo}:{ref} is not in registry {self.host}.", "Check the repository and tag.")
            self._expect(resp, (200,), f"fetching {repo}:{ref}")
            return _read_limited(resp, f"manifest of {repo}:{ref}")

        data = self._retrying(f"fetching {repo}:{ref}", once)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if _DIGEST.match(ref) and digest != ref:
            raise IntegrityError(f"manifest {ref} came back with digest {digest}.", "Refusing it.")
        return data, digest

    def blob_exists(self, repo: str, digest: str) -> bool:
        def once():
            resp = self._send("HEAD", self.url(f"{repo}/blobs/{digest}"))
            resp.close()
            if resp.status_code == 404:
                return False
            self._expect(resp, (200,), f"checking blob {digest}")
            return True

        return self._retrying(f"checking blob {digest[:19]}", once)

    def upload_blob(self, repo: str, digest: str, size: int, body: Callable[[], object]) -> None:
        """POST an upload session, then PUT the whole blob with its digest (the registry re-checks it)."""

        def once():
            start = self._send("POST", self.url(f"{repo}/blobs/uploads/"), headers={"Content-Length": "0"})
            self._expect(start, (202,), f"starting upload of {digest[:19]}").close()
            location = urljoin(self.url(""), start.headers.get("Location", ""))
            parts = urlsplit(location)
            query = urlencode(parse_qsl(parts.query) + [("digest", digest)])
            put_url = urlunsplit(parts._replace(query=query))
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            self._expect(self._send("PUT", put_url, headers=headers, body=body), (201,), f"uploading {digest[:19]}")

        self._retrying(f"uploading blob {digest[:19]}", once)

    def put_manifest(self, repo: str, tag: str, data: bytes) -> str:
        def once():
            headers = {"Content-Type": MANIFEST_MEDIA_TYPE}
            resp = self._send("PUT", self.url(f"{repo}/manifests/{tag}"), headers=headers, body=data)
            return self._expect(resp, (201,), f"tagging {repo}:{tag}").headers.get("Docker-Content-Digest")

        return self._retrying(f"tagging {repo}:{tag}", once)

    def get_blob(self, repo: str, digest: str, size: int, target: Path | None = None) -> bytes | None:
        """Download a blob, checking its size and digest; into ``target`` (a new file) or return its bytes."""

        def once():
            resp = self._send("GET", self.url(f"{repo}/blobs/{digest}"), stream=True)
            self._expect(resp, (200,), f"fetching blob {digest[:19]}")
            h, got, buf = hashlib.sha256(), 0, bytearray()
            if target is not None:
                target.unlink(missing_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                out = os.fdopen(os.open(target, flags, 0o644), "wb")
            try:
                for chunk in resp.iter_content(_CHUNK):
                    got += len(chunk)
                    if got > size:
                        break
                    h.update(chunk)
                    if target is not None:
                        out.write(chunk)
                    else:
                        buf.extend(chunk)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                raise _Transient(_short_reason(exc)) from exc
            finally:
                resp.close()
                if target is not None:
                    out.close()
            if got != size or "sha256:" + h.hexdigest() != digest:
                raise IntegrityError(
                    f"blob {digest[:19]}… from {self.host} does not match its digest (tampered or corrupt).",
                    "Nothing was written; re-publish the artifact and tell the registry's operators.",
                )
            return None if target is not None else bytes(buf)

        return self._retrying(f"fetching blob {digest[:19]}", once)


def _read_limited(resp: requests.Response, what: str) -> bytes:
    buf = bytearray()
    try:
        for chunk in resp.iter_content(_CHUNK):
            buf.extend(chunk)
            if len(buf) > _MAX_JSON:
                raise IntegrityError(f"{what} is larger than {_MAX_JSON >> 20} MiB.", "Refusing it.")
    finally:
        resp.close()
    return bytes(buf)


# --------------------------------------------------------------------------------------------- artifacts


def oci_manifest(narrowed: dict, config: bytes, *, allow_failed: bool = False) -> bytes:
    """The OCI image manifest (canonical JSON bytes) for one narrowed exporter manifest."""
    variant = narrowed["variants"][0]
    layers = [
        {
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": f"sha256:{rec['sha256']}",
            "size": rec["size"],
            "annotations": {TITLE: rec["path"]},
        }
        for rec in variant_files(narrowed, variant["id"])
    ]
    passed = variant["status"] == "passed" and bool((variant.get("parity") or {}).get("passed"))
    verdict = "passed" if passed else ("failed" if variant["status"] == "passed" else variant["status"])
    annotations = {
        "org.opencontainers.image.created": narrowed["created_at"],
        "org.opencontainers.image.revision": narrowed["source"].get("revision"),
        ANNOTATION + "source.repo": narrowed["source"].get("repo"),
        ANNOTATION + "source.revision": narrowed["source"].get("revision"),
        ANNOTATION + "variant": variant["id"],
        ANNOTATION + "backend": variant["backend"],
        ANNOTATION + "precision": variant["precision"],
        ANNOTATION + "parity": verdict,
        ANNOTATION + "tool-version": narrowed["tool_version"],
        ANNOTATION + "allow-failed": "true" if allow_failed else None,
    }
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
            "size": len(config),
        },
        "layers": layers,
        "annotations": {k: str(v) for k, v in annotations.items() if v is not None},
    }
    jsonschema.validate(doc, oras.schemas.manifest)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def default_tag(manifest: dict, variant_id: str) -> str:
    revision = manifest["source"].get("revision")
    if not revision:
        raise UsageError("this artifact has no pinned source revision for a default tag.", "Name a tag: …/REPO:TAG.")
    return f"{revision[:12]}-{variant_id}"


@dataclass(frozen=True)
class PublishResult:
    variant: str
    reference: str  # oci://host/repo:tag
    digest: str
    status: str  # "pushed" | "unchanged" | "replaced"
    uploaded: int  # blobs sent (the rest were already there)
    allow_failed: bool


@dataclass(frozen=True)
class PullResult:
    dest: Path
    reference: str
    digest: str
    variant: str
    files: int
    size: int
    cleaned: tuple[str, ...] = ()  # what killed earlier pulls had left beside dest, now removed


def publish(
    artifact: Path,
    target: str,
    *,
    variant: str | None = None,
    allow_failed: bool = False,
    force: bool = False,
    insecure: bool = False,
    retry: RetryPolicy | None = None,
) -> list[PublishResult]:
    """Push each chosen variant of ``artifact`` as an OCI artifact (all are checked before any is sent)."""
    artifact = Path(artifact)
    ref = Reference.parse(target)
    if ref.digest:
        raise UsageError("publish needs a tag, not a digest.", "Write oci://HOST/REPO[:TAG].")
    manifest = mf.load(artifact)
    ids = select_variants(manifest, variant)
    if ref.tag and len(ids) > 1:
        raise UsageError("one tag cannot name several variants.", "Drop the :TAG (default <sha12>-<variant>).")
    plans = []
    for vid in ids:
        forced = require_publishable(artifact, manifest, vid, allow_failed=allow_failed)
        narrowed = mf.narrow(manifest, vid)
        config = manifest_bytes(narrowed)
        data = oci_manifest(narrowed, config, allow_failed=forced)
        plans.append((vid, ref.tag or default_tag(manifest, vid), config, data, forced))
    results = []
    with _client(ref, insecure, retry) as client:
        for vid, tag, config, data, forced in plans:
            status, digest, uploaded = _publish_one(client, artifact, ref.repository, tag, config, data, force)
            where = str(Reference(ref.host, ref.repository, tag))
            results.append(PublishResult(vid, where, digest, status, uploaded, forced))
    return results


def _client(ref: Reference, insecure: bool, retry: RetryPolicy | None) -> RegistryClient:
    return RegistryClient(ref.host, insecure=insecure, credentials=lambda: find_credentials(ref.host), retry=retry)


def _publish_one(client: RegistryClient, artifact: Path, repo: str, tag: str, config: bytes, data: bytes, force: bool):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    remote = client.manifest_digest(repo, tag)
    if remote == digest:
        return "unchanged", digest, 0
    if remote is not None and not force:
        raise OutputError(
            f"tag {repo}:{tag} on {client.host} already points at other content ({remote[:19]}…).",
            "Pass --force to move the tag, or publish under another tag.",
        )
    doc = json.loads(data)
    blobs: dict[str, tuple[int, Callable[[], object]]] = {doc["config"]["digest"]: (len(config), lambda: config)}
    for layer in doc["layers"]:
        path = artifact / layer["annotations"][TITLE]
        blobs.setdefault(layer["digest"], (layer["size"], lambda p=path: open(p, "rb")))
    uploaded = 0
    for blob_digest, (size, body) in blobs.items():
        if not client.blob_exists(repo, blob_digest):
            client.upload_blob(repo, blob_digest, size, body)
            uploaded += 1
    stored = client.put_manifest(repo, tag, data)
    if stored and stored != digest:
        raise RegistryError(f"registry {client.host} stored the manifest as {stored}, not {digest}.", "Check it.")
    return ("replaced" if remote else "pushed"), digest, uploaded


def _checked_layers(doc: dict, narrowed: dict, where: str) -> list[tuple[str, str, int]]:
    """(path, digest, size) per layer, after checking them against the narrowed manifest's file list."""
    expected = mf.listed_files(narrowed)
    layers = []
    for layer in doc.get("layers") or []:
        title = (layer.get("annotations") or {}).get(TITLE)
        if layer.get("mediaType") != LAYER_MEDIA_TYPE or not isinstance(title, str):
            raise IntegrityError(f"{where} has a layer that is not a plain exporter file.", "Refusing it.")
        layers.append((title, layer.get("digest"), layer.get("size")))
    check_layout([p for p, _, _ in layers], where)
    if sorted(p for p, _, _ in layers) != sorted(expected):
        raise IntegrityError(f"{where}: its layers and its manifest list different files.", "Refusing it.")
    for path, digest, size in layers:
        rec = expected[path]
        if digest != f"sha256:{rec['sha256']}" or size != rec["size"]:
            raise IntegrityError(f"{where}: layer {path} does not match the manifest's sha256/size.", "Refusing it.")
    return layers


def pull(
    source: str, dest: Path, *, insecure: bool = False, force: bool = False, retry: RetryPolicy | None = None
) -> PullResult:
    """Fetch a published variant into ``dest``; every digest is checked and nothing is written on failure."""
    ref = Reference.parse(source)
    dest = Path(dest)
    if not (ref.tag or ref.digest):
        raise UsageError("pull needs a tag or digest.", "Write oci://HOST/REPO:TAG or …/REPO@sha256:….")
    if dest.exists() and not force:
        raise OutputError(f"{dest} already exists.", "Pass --force to replace it, or choose another folder.")
    outdir.check_out(dest)  # writable; --force replaces only an empty folder or an artifact of ours
    where = str(ref)
    with _client(ref, insecure, retry) as client, outdir.claim(dest) as cleaned:
        digest, config, narrowed, layers = _fetch_checked(client, ref)
        with staged_dir(dest, replace=force) as tmp:
            for path, blob_digest, size in layers:
                target = tmp / path
                target.parent.mkdir(parents=True, exist_ok=True)
                client.get_blob(ref.repository, blob_digest, size, target)
            (tmp / mf.MANIFEST_NAME).write_bytes(config)
            mf.require_intact(tmp, narrowed)
    total = sum(size for _, _, size in layers)
    return PullResult(dest, where, digest, narrowed["variants"][0]["id"], len(layers), total, tuple(cleaned))


def _fetch_checked(client: RegistryClient, ref: Reference) -> tuple[str, bytes, dict, list[tuple[str, str, int]]]:
    """Manifest digest, config bytes, narrowed manifest and checked layers of ``ref`` (nothing written)."""
    where = str(ref)
    data, digest = client.get_manifest(ref.repository, ref.digest or ref.tag)
    try:
        doc = json.loads(data)
        jsonschema.validate(doc, oras.schemas.manifest)
    except (ValueError, jsonschema.ValidationError) as exc:
        raise IntegrityError(f"{where} does not hold a valid OCI manifest.", "Refusing it.") from exc
    config_desc = doc["config"]
    if doc.get("mediaType") != MANIFEST_MEDIA_TYPE or config_desc.get("mediaType") != CONFIG_MEDIA_TYPE:
        raise UsageError(f"{where} is not an exporter artifact.", "Pull a reference made by `exporter publish`.")
    size = config_desc.get("size")
    if not _DIGEST.match(str(config_desc.get("digest"))) or type(size) is not int or not 0 <= size <= _MAX_JSON:
        raise IntegrityError(f"{where} has a malformed config descriptor.", "Refusing it.")
    config = client.get_blob(ref.repository, config_desc["digest"], size)
    narrowed = parse_narrowed_manifest(config, where)
    return digest, config, narrowed, _checked_layers(doc, narrowed, where)

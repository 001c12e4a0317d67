"""The OCI distribution API of one registry host over ``requests``: auth handshake, retries, digest checks.

oras's own ``push``/``pull`` are not used: they retry with fixed multi-second sleeps, cannot compare a
tag's current digest before pushing, read whole files into memory and trust layer titles as paths. Here
connection errors, 429 and 5xx are retried with exponential backoff, then one ``RegistryError``;
credentials are sent only after a 401 challenge and never appear in any message. Plain HTTP only for
loopback hosts unless ``insecure``.

Credentials travel only over HTTPS, or over plain HTTP to the registry host itself when it is on loopback
or the user passed ``--insecure`` for it; a token realm elsewhere over plain HTTP is refused, never sent
them. Every operation has a total deadline (``DEADLINE_ENV``, seconds, default 120) across its attempts and
short connect/read timeouts (``TIMEOUT_ENV``, default 30 s); a registry that accepts and never answers
ends in one line, and each wait that failed is reported through ``set_progress`` as it happens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

from exporter.errors import IntegrityError, RegistryError
from exporter.ship.oci_docs import INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE
from exporter.ship.oci_ref import _CRED_HINT, DIGEST_RE, Credentials, Reference, is_loopback

_MAX_JSON = 16 << 20  # manifests and config blobs larger than this are refused
TIMEOUT_ENV = "EXPORTER_REGISTRY_TIMEOUT"  # seconds a connect or a read may wait (default 30)
DEADLINE_ENV = "EXPORTER_REGISTRY_DEADLINE"  # seconds one operation may take across its attempts (default 120)
_DEFAULT_TIMEOUT, _DEFAULT_DEADLINE, _CONNECT_CAP = 30.0, 120.0, 10.0
_progress: list[Callable[[str], None]] = []


def set_progress(report: Callable[[str], None] | None) -> None:
    """Where a line goes when the registry made an operation wait (the CLI prints it; the library never does)."""
    _progress[:] = [report] if report else []


def _seconds(env: str, default: float) -> float:
    raw = os.environ.get(env)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise RegistryError(f"{env}={raw!r} is not a positive number of seconds.", f"Unset {env} or fix it.")
    return value


_CHUNK = 1 << 20
_DIGEST = DIGEST_RE

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
        timeout: tuple[float, float] | None = None,
    ) -> None:
        self.host = host
        hostname = Reference(host, "x").hostname
        self.scheme = "http" if insecure or is_loopback(hostname) else "https"
        self._plain_ok = self.scheme == "http"
        self._loopback = is_loopback(hostname)
        self._creds_source = credentials if callable(credentials) else (lambda: credentials)
        self._creds: Credentials | None = None
        self._creds_loaded = False
        self._authz: str | None = None
        self.retry = retry or RetryPolicy()
        read = _seconds(TIMEOUT_ENV, _DEFAULT_TIMEOUT)
        self.timeout = timeout or (min(_CONNECT_CAP, read), read)
        self.deadline = _seconds(DEADLINE_ENV, _DEFAULT_DEADLINE)
        self._ends: float | None = None  # monotonic end of the operation running now
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

    def _timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds for the next request: the client's, cut to what the deadline leaves."""
        if self._ends is None:
            return self.timeout
        left = max(0.05, self._ends - time.monotonic())
        return (min(self.timeout[0], left), min(self.timeout[1], left))

    def may_send_credentials(self, url: str) -> bool:
        """Credentials go over HTTPS, or over plain HTTP only to this registry's own host when it is on
        loopback or plain HTTP was asked for (--insecure); never in clear text to any other host."""
        parts = urlsplit(url)
        if parts.scheme == "https":
            return True
        return parts.scheme == "http" and parts.netloc == self.host and self._plain_ok

    def _raw(self, method: str, url: str, headers: dict, body, stream: bool) -> requests.Response:
        if urlsplit(url).netloc != self.host or not self.may_send_credentials(url):
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        payload = body() if callable(body) else body
        try:
            return self.session.request(
                method,
                url,
                headers=headers,
                data=payload,
                stream=stream,
                timeout=self._timeouts(),
                allow_redirects=True,
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
            if creds is not None and not self.may_send_credentials(realm):
                raise RegistryError(
                    f"registry {self.host} asks for credentials to be sent over plain HTTP to "
                    f"{parts.netloc or realm[:60]}; refusing (credentials travel only over HTTPS, or to the "
                    "registry itself on loopback or with --insecure).",
                    "Use the registry's HTTPS address.",
                )
            auth = (creds.username, creds.password) if creds else None
            try:
                resp = self.session.get(realm, params=params, auth=auth, timeout=self._timeouts())
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
        """``fn`` until it does not fail transiently, at most ``retry.attempts`` times and within the deadline."""
        delay = self.retry.first_delay
        start = time.monotonic()
        outer, self._ends = self._ends, start + self.deadline
        try:
            for attempt in range(1, self.retry.attempts + 1):
                try:
                    return fn()
                except _Transient as exc:
                    left = self._ends - time.monotonic()
                    if attempt == self.retry.attempts or left <= 0:
                        spent = time.monotonic() - start
                        limit = "" if left > 0 else f", past the {self.deadline:g}s deadline set by {DEADLINE_ENV}"
                        raise RegistryError(
                            f"{what} failed: registry {self.host}: {exc.reason} (gave up after {attempt} "
                            f"attempt{'s' if attempt > 1 else ''} in {spent:.0f}s{limit}).",
                            "Check that the registry is up and reachable, then retry; a failed publish leaves no tag.",
                        ) from exc
                    for report in _progress:
                        report(
                            f"waiting for registry {self.host} ({what}): {exc.reason}; "
                            f"retry {attempt + 1}/{self.retry.attempts}, {left:.0f}s left"
                        )
                    time.sleep(min(delay, max(left, 0)))
                    delay = min(delay * self.retry.factor, self.retry.max_delay)
            raise AssertionError("unreachable")
        finally:
            self._ends = outer

    @staticmethod
    def _expect(resp: requests.Response, ok: tuple[int, ...], what: str) -> requests.Response:
        if resp.status_code not in ok:
            detail = _oci_error(resp)
            resp.close()
            raise RegistryError(f"{what} failed: HTTP {resp.status_code} {detail}.", "Check the reference and retry.")
        return resp

    # -- operations

    def manifest_digest(self, repo: str, ref: str, media_type: str = MANIFEST_MEDIA_TYPE) -> str | None:
        """Digest of the manifest that ``ref`` names, or None if there is none."""

        def once():
            accept = {"Accept": media_type}
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

    def get_manifest(self, repo: str, ref: str, media_type: str = MANIFEST_MEDIA_TYPE) -> tuple[bytes, str]:
        """The manifest bytes ``ref`` names and their digest (checked when ``ref`` is a digest)."""

        def once():
            accept = {"Accept": media_type}
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

    def put_manifest(self, repo: str, tag: str, data: bytes, media_type: str = MANIFEST_MEDIA_TYPE) -> str:
        """PUT manifest bytes under a tag or their own digest; returns the digest the registry reports."""

        def once():
            headers = {"Content-Type": media_type}
            resp = self._send("PUT", self.url(f"{repo}/manifests/{tag}"), headers=headers, body=data)
            return self._expect(resp, (201,), f"tagging {repo}:{tag}").headers.get("Docker-Content-Digest")

        return self._retrying(f"tagging {repo}:{tag}", once)

    def referrers(self, repo: str, digest: str) -> dict | None:
        """The OCI referrers API's index for ``digest``, or None where the registry has no such API."""

        def once():
            resp = self._send("GET", self.url(f"{repo}/referrers/{digest}"), headers={"Accept": INDEX_MEDIA_TYPE})
            if resp.status_code in (400, 404, 405) or not resp.headers.get("Content-Type", "").startswith(
                INDEX_MEDIA_TYPE
            ):
                resp.close()
                return None
            self._expect(resp, (200,), f"listing referrers of {digest[:19]}")
            try:
                return json.loads(_read_limited(resp, f"referrers of {digest[:19]}"))
            except ValueError:
                return None

        return self._retrying(f"listing referrers of {digest[:19]}", once)

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount (no bytes sent); False when the registry started an upload instead."""

        def once():
            query = urlencode({"mount": digest, "from": from_repo})
            resp = self._send("POST", self.url(f"{repo}/blobs/uploads/?{query}"), headers={"Content-Length": "0"})
            resp.close()
            self._expect(resp, (201, 202), f"mounting blob {digest[:19]}")
            return resp.status_code == 201

        return self._retrying(f"mounting blob {digest[:19]}", once)

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

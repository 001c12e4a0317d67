"""Talking to one OCI registry host over ``requests``: the auth handshake, retries with backoff, timeouts and
the total deadline of an operation (``RegistryTransport``); ``exporter.ship.oci_client`` builds the
distribution API's operations on it.

Connection errors, 429 and 5xx are retried with exponential backoff, then one ``RegistryError``;
credentials are sent only after a 401 challenge and never appear in any message. Plain HTTP only for
loopback hosts unless ``insecure``. Credentials travel only over HTTPS, or over plain HTTP to the registry
host itself when it is on loopback or the user passed ``--insecure`` for it; a token realm elsewhere over
plain HTTP is refused, never sent them. Every operation has a total deadline (``DEADLINE_ENV``, seconds,
default 120) across its attempts and short connect/read timeouts (``TIMEOUT_ENV``, default 30 s); a registry
that accepts and never answers ends in one line, and each wait that failed is reported through
``set_progress`` as it happens.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self
from urllib.parse import urlsplit

import requests

from exporter.errors import RegistryError
from exporter.ship.oci_ref import _CRED_HINT, Credentials, Reference, is_loopback

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


class RegistryTransport:
    """One registry host over ``requests``: auth handshake, retries, timeouts and deadline (no operations)."""

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

    def __enter__(self) -> Self:
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

"""The OCI distribution API of one registry host: manifests, blobs, mounts and referrers, every transfer
checked against its digest, on ``exporter.ship.oci_transport`` (auth handshake, retries, timeouts, deadline).

oras's own ``push``/``pull`` are not used: they retry with fixed multi-second sleeps, cannot compare a
tag's current digest before pushing, read whole files into memory and trust layer titles as paths.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import overload
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

from exporter.errors import IntegrityError, RegistryError
from exporter.ship.oci_docs import INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE
from exporter.ship.oci_ref import DIGEST_RE
from exporter.ship.oci_transport import RegistryTransport, _short_reason, _Transient

_MAX_JSON = 16 << 20  # manifests and config blobs larger than this are refused
_CHUNK = 1 << 20
_DIGEST = DIGEST_RE


class RegistryClient(RegistryTransport):
    """The OCI distribution API of one registry host: auth handshake, retries, digest-checked transfers."""

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

    @overload
    def get_blob(self, repo: str, digest: str, size: int, target: None = None) -> bytes: ...
    @overload
    def get_blob(self, repo: str, digest: str, size: int, target: Path) -> None: ...
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

"""Plain-urllib access to the Hugging Face Hub: small files, JSON and byte ranges, each failure one clear line.

No huggingface_hub dependency: the planner reads a handful of small things (the repo listing, config.json, the
safetensors index, header byte ranges), and the stdlib does that with explicit timeouts and no surprises.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from planner import __version__
from planner.errors import PlannerError

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT_S = 10.0
USER_AGENT = f"llm-deploy-planner/{__version__}"
# A server that ignores Range answers 200 with the whole file; we still read only this far into it.
MAX_IGNORED_RANGE_BYTES = 256 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class HubError(PlannerError):
    """The Hub could not be read (network, HTTP status, timeout, odd answer); nothing was cached."""


@dataclass(frozen=True)
class HubSettings:
    """Where the Hub is, the token to send and how long to wait (from HF_ENDPOINT, HF_TOKEN, PLANNER_HUB_TIMEOUT)."""

    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_env(cls) -> HubSettings:
        """Settings from the environment; a malformed value is a clear error."""
        endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PlannerError(f"HF_ENDPOINT: expected an http(s) URL like {DEFAULT_ENDPOINT}, found {endpoint!r}")
        raw = os.environ.get("PLANNER_HUB_TIMEOUT")
        timeout = DEFAULT_TIMEOUT_S
        if raw:
            try:
                timeout = float(raw)
            except ValueError:
                timeout = -1.0
            if not 0 < timeout <= 3600:
                raise PlannerError(f"PLANNER_HUB_TIMEOUT: expected seconds between 0 and 3600, found {raw!r}")
        token = (os.environ.get("HF_TOKEN") or "").strip() or None
        return cls(endpoint, token, timeout)


class _DropAuthOnOtherHost(urllib.request.HTTPRedirectHandler):
    """Follow redirects (the Hub sends file reads to a CDN) but never carry the token to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


class HubClient:
    """HTTP reads for one repo: every error names the repo and the file, and says what to do."""

    def __init__(self, settings: HubSettings, repo: str):
        self.settings = settings
        self.repo = repo
        self._opener = urllib.request.build_opener(_DropAuthOnOtherHost())
        self.requests = 0  # how many requests were made (inspect reports it)

    @property
    def page(self) -> str:
        """The repo's web page (where access to a gated repo is requested)."""
        return f"{self.settings.endpoint}/{self.repo}"

    def api_url(self, revision: str) -> str:
        """Repo listing with file sizes at a revision."""
        return f"{self.settings.endpoint}/api/models/{self.repo}/revision/{quote(revision, safe='')}?blobs=true"

    def file_url(self, sha: str, name: str) -> str:
        """A file at a pinned commit (the Hub redirects large files to its CDN, which honours Range)."""
        return f"{self.settings.endpoint}/{self.repo}/resolve/{quote(sha, safe='')}/{quote(name, safe='/')}"

    # --- requests -------------------------------------------------------------------------------------------

    def get_json(self, url: str, what: str, limit: int) -> Any:
        """A small JSON document."""
        body = self.get(url, what, limit)
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise HubError(f"{what}: expected JSON from {self.settings.endpoint} ({str(exc)[:100]})") from None

    def get(self, url: str, what: str, limit: int) -> bytes:
        """A whole small file, refusing anything over `limit` bytes."""
        resp = self._open(url, what, {})
        with resp:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise HubError(f"{what}: {int(length)} bytes is more than the {limit}-byte limit for this file")
            body = self._read(resp, limit + 1, what)
        if len(body) > limit:
            raise HubError(f"{what}: more than the {limit}-byte limit for this file")
        return body

    def get_range(self, url: str, what: str, start: int, length: int) -> tuple[bytes, int | None]:
        """Bytes [start, start+length) of a file and the file's full size (None if the server did not say)."""
        if length <= 0:
            return b"", None
        resp = self._open(url, what, {"Range": f"bytes={start}-{start + length - 1}"})
        with resp:
            if resp.status == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "").strip())
                if m is None or int(m.group(1)) != start:
                    raise HubError(f"{what}: the server answered a different byte range than asked "
                                   f"(Content-Range {resp.headers.get('Content-Range')!r}, wanted bytes {start}-)")
                total = None if m.group(3) == "*" else int(m.group(3))
                return self._read(resp, length, what), total
            # 200: Range was ignored and the whole file follows; read only as far as needed, then hang up.
            if start + length > MAX_IGNORED_RANGE_BYTES:
                raise HubError(f"{what}: the server ignores HTTP range requests, so the header cannot be read without the whole file")
            cl = resp.headers.get("Content-Length")
            data = self._read(resp, start + length, what)
            return data[start:], int(cl) if cl and cl.isdigit() else None

    def _open(self, url: str, what: str, headers: dict[str, str]):  # type: ignore[no-untyped-def]
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
        if self.settings.token:
            req.add_header("Authorization", f"Bearer {self.settings.token}")
        self.requests += 1
        try:
            return self._opener.open(req, timeout=self.settings.timeout_s)
        except urllib.error.HTTPError as exc:
            err = self._status_error(exc, what)
            exc.close()
            raise err from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise self._timeout(what) from None
            raise HubError(f"{what}: cannot reach {self.settings.endpoint} ({exc.reason}); check the network or HF_ENDPOINT") from None
        except TimeoutError:
            raise self._timeout(what) from None
        except (http.client.HTTPException, OSError) as exc:
            raise HubError(f"{what}: the connection to {self.settings.endpoint} failed ({type(exc).__name__}: {exc})") from None

    def _read(self, resp, n: int, what: str) -> bytes:  # type: ignore[no-untyped-def]
        try:
            return resp.read(n)
        except TimeoutError:
            raise self._timeout(what) from None
        except http.client.IncompleteRead as exc:
            raise HubError(f"{what}: the connection closed after {len(exc.partial)} bytes, before the answer was complete") from None
        except (http.client.HTTPException, OSError) as exc:
            raise HubError(f"{what}: reading the answer failed ({type(exc).__name__}: {exc})") from None

    def _timeout(self, what: str) -> HubError:
        return HubError(f"{what}: no answer from {self.settings.endpoint} within {self.settings.timeout_s:g} s "
                        "(timed out; set PLANNER_HUB_TIMEOUT=SECONDS to wait longer)")

    def _status_error(self, exc: urllib.error.HTTPError, what: str) -> HubError:
        code = exc.code
        hdrs = exc.headers
        err = (hdrs.get("X-Error-Code") or "") if hdrs is not None else ""
        detail = (hdrs.get("X-Error-Message") or "") if hdrs is not None else ""
        said = f" ({detail[:160]})" if detail else ""
        sent = " The HF_TOKEN sent was not accepted for it." if self.settings.token else ""
        if err == "GatedRepo" or (code == 403 and err != "RepoNotFound"):
            if code == 401 or not self.settings.token:
                return HubError(f"{what}: {self.repo} is gated (HTTP {code}): a token is needed; request access at {self.page}, "
                                "then set HF_TOKEN to a token of that account")
            return HubError(f"{what}: access to {self.repo} not granted (HTTP {code}){said}: request access at {self.page} "
                            "with the account whose token is in HF_TOKEN")
        if code == 401:
            return HubError(f"{what}: {self.repo} not found, or private or gated (HTTP 401){said}: check the repo id; "
                            f"for a private or gated repo set HF_TOKEN.{sent}")
        if code == 404:
            if err == "EntryNotFound":
                return HubError(f"{what}: no such file in {self.repo} (HTTP 404)")
            if err == "RevisionNotFound":
                return HubError(f"{what}: no such revision in {self.repo} (HTTP 404)")
            return HubError(f"{what}: {self.repo} not found on {self.settings.endpoint} (HTTP 404): check the repo id")
        if code == 416:
            return HubError(f"{what}: byte range not satisfiable (HTTP 416): the file is shorter than its header says (truncated)")
        if code == 429:
            return HubError(f"{what}: rate-limited by the Hub (HTTP 429); try again later or set HF_TOKEN")
        if code >= 500:
            return HubError(f"{what}: the Hub answered HTTP {code} ({exc.reason}); try again later")
        return HubError(f"{what}: HTTP {code} ({exc.reason}){said}")

"""Access to the Hugging Face Hub through huggingface_hub: its token resolution (HF_TOKEN, then the `hf auth login`
file), its HTTP client (redirects to the CDN without carrying the token to another host) and its retry with backoff on
429/5xx; every failure becomes one clear line naming the repo and the file.

huggingface_hub is imported here only, inside functions: `planner recommend` on a bundled profile never loads it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from planner import __version__
from planner.errors import PlannerError

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 3  # 429/5xx answers retried by huggingface_hub's http_backoff (1 s, 2 s, 4 s or the Retry-After)
# A server that ignores Range answers 200 with the whole file; we still read only this far into it.
MAX_IGNORED_RANGE_BYTES = 256 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_TRUE = ("1", "true", "yes", "on")  # huggingface_hub.constants._is_true's spellings


class HubError(PlannerError):
    """The Hub could not be read (network, HTTP status, timeout, odd answer); nothing was cached."""


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


@dataclass(frozen=True)
class HubSettings:
    """Where the Hub is, the token to send, how long to wait and how often to retry."""

    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES

    @classmethod
    def from_env(cls) -> HubSettings:
        """Settings from the environment at call time (huggingface_hub.constants reads it once, at import, which a
        long-lived process or a test that changes HF_ENDPOINT would miss); a malformed value is a clear error."""
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
        from huggingface_hub import get_token  # lazy: only the Hub path needs the library

        # HF_TOKEN, then HUGGING_FACE_HUB_TOKEN, then the file `hf auth login` wrote (HF_TOKEN_PATH / HF_HOME/token).
        return cls(endpoint, get_token(), timeout, DEFAULT_RETRIES)


def hub_offline() -> str | None:
    """The variable that forbids the Hub even with --online (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE), else None."""
    return next((var for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if _env_true(var)), None)


class HubClient:
    """HTTP reads for one repo through huggingface_hub's session; every error names the repo and the file."""

    def __init__(self, settings: HubSettings, repo: str):
        self.settings = settings
        self.repo = repo
        self.requests = 0  # reads asked for (inspect reports them; the library's retries are not counted)

    @property
    def page(self) -> str:
        """The repo's web page (where access to a gated repo is requested)."""
        return f"{self.settings.endpoint}/{self.repo}"

    def api_url(self, revision: str) -> str:
        """Repo listing with file sizes at a revision."""
        return f"{self.settings.endpoint}/api/models/{self.repo}/revision/{quote(revision, safe='')}?blobs=true"

    def file_url(self, sha: str, name: str) -> str:
        """A file at a pinned commit (huggingface_hub's hf_hub_url, on our endpoint)."""
        from huggingface_hub import hf_hub_url  # lazy: as above

        return hf_hub_url(self.repo, name, revision=sha, endpoint=self.settings.endpoint)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """huggingface_hub's headers (user agent, token) with ours added."""
        from huggingface_hub.utils import build_hf_headers  # lazy: as above

        h = build_hf_headers(token=self.settings.token or False, library_name="llm-deploy-planner",
                             library_version=__version__)
        return {**h, **(extra or {})}

    def get_json(self, url: str, what: str, limit: int) -> Any:
        """A small JSON document."""
        body = self.get(url, what, limit)
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise HubError(f"{what}: expected JSON from {self.settings.endpoint} ({str(exc)[:100]})") from None

    def get(self, url: str, what: str, limit: int) -> bytes:
        """A whole small file, refusing anything over `limit` bytes."""
        body, _, _ = self._fetch(url, what, limit, {})
        if len(body) > limit:
            raise HubError(f"{what}: more than the {limit}-byte limit for this file")
        return body

    def get_range(self, url: str, what: str, start: int, length: int) -> tuple[bytes, int | None]:
        """Bytes [start, start+length) of a file and the file's full size (None if the server did not say)."""
        if length <= 0:
            return b"", None
        body, status, headers = self._fetch(url, what, start + length, {"Range": f"bytes={start}-{start + length - 1}"})
        if status == 206:
            m = _CONTENT_RANGE.match(headers.get("Content-Range", "").strip())
            if m is None or int(m.group(1)) != start:
                raise HubError(f"{what}: the server answered a different byte range than asked "
                               f"(Content-Range {headers.get('Content-Range')!r}, wanted bytes {start}-)")
            return body[:length], None if m.group(3) == "*" else int(m.group(3))
        # 200: Range was ignored and the whole file came; only the first start+length bytes were read.
        if start + length > MAX_IGNORED_RANGE_BYTES:
            raise HubError(f"{what}: the server ignores HTTP range requests, so the header cannot be read without the whole file")
        cl = headers.get("Content-Length", "")
        return body[start:start + length], int(cl) if cl.isdigit() else None

    def _fetch(self, url: str, what: str, limit: int, extra: dict[str, str]) -> tuple[bytes, int, Any]:
        """One GET through huggingface_hub's http_stream_backoff (429/5xx retried with backoff, Retry-After honoured);
        reads at most limit+1 bytes of the answer, then hangs up."""
        from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff  # lazy: as above

        self.requests += 1
        with self.errors(what):
            # Only statuses are retried: a refused connection or a timeout is answered at once, not after ~20 s.
            with http_stream_backoff("GET", url, headers=self.headers(extra), timeout=self.settings.timeout_s,
                                     max_retries=self.settings.retries, retry_on_exceptions=(),
                                     follow_redirects=True) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    hf_raise_for_status(resp)
                length = resp.headers.get("Content-Length", "")
                if resp.status_code == 200 and "Range" not in extra and length.isdigit() and int(length) > limit:
                    raise HubError(f"{what}: {int(length)} bytes is more than the {limit}-byte limit for this file")
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        break
                return bytes(body), resp.status_code, resp.headers

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Turn huggingface_hub's and httpx's exceptions into one-line HubErrors naming `what`."""
        import httpx2  # huggingface_hub's HTTP client
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        try:
            yield
        except HfHubHTTPError as exc:
            raise self._status_error(exc, what) from None
        except OfflineModeIsEnabled:
            raise HubError(f"{what}: HF_HUB_OFFLINE is set, so the Hub is not read; unset it to read the Hub") from None
        except httpx2.TimeoutException:
            raise HubError(f"{what}: no answer from {self.settings.endpoint} within {self.settings.timeout_s:g} s "
                           "(timed out; set PLANNER_HUB_TIMEOUT=SECONDS to wait longer)") from None
        except (httpx2.ConnectError, httpx2.ProxyError) as exc:
            raise HubError(f"{what}: cannot reach {self.settings.endpoint} ({exc}); check the network or HF_ENDPOINT") from None
        except (httpx2.HTTPError, OSError) as exc:
            raise HubError(f"{what}: the connection to {self.settings.endpoint} failed ({type(exc).__name__}: {exc})") from None

    def _status_error(self, exc: Any, what: str) -> HubError:
        resp = exc.response
        code = resp.status_code if resp is not None else 0
        err = resp.headers.get("X-Error-Code", "") if resp is not None else ""
        detail = resp.headers.get("X-Error-Message", "") if resp is not None else ""
        said = f" ({detail[:160]})" if detail else ""
        sent = " The token sent (HF_TOKEN or the `hf auth login` file) was not accepted for it." if self.settings.token else ""
        if err == "GatedRepo" or (code == 403 and err != "RepoNotFound"):
            if code == 401 or not self.settings.token:
                return HubError(f"{what}: {self.repo} is gated (HTTP {code}): a token is needed; request access at {self.page}, "
                                "then set HF_TOKEN to a token of that account (or run `hf auth login`)")
            return HubError(f"{what}: access to {self.repo} not granted (HTTP {code}){said}: request access at {self.page} "
                            "with the account whose token is in HF_TOKEN or the `hf auth login` file")
        if code == 401:
            return HubError(f"{what}: {self.repo} not found, or private or gated (HTTP 401){said}: check the repo id; "
                            f"for a private or gated repo set HF_TOKEN or run `hf auth login`.{sent}")
        if code == 404:
            if err == "EntryNotFound":
                return HubError(f"{what}: no such file in {self.repo} (HTTP 404)")
            if err == "RevisionNotFound":
                return HubError(f"{what}: no such revision in {self.repo} (HTTP 404)")
            return HubError(f"{what}: {self.repo} not found on {self.settings.endpoint} (HTTP 404): check the repo id")
        if code == 416:
            return HubError(f"{what}: byte range not satisfiable (HTTP 416): the file is shorter than its header says (truncated)")
        if code == 429:
            return HubError(f"{what}: rate-limited by the Hub (HTTP 429, still after {self.settings.retries} retries); "
                            "try again later or log in (HF_TOKEN or `hf auth login`)")
        if code >= 500:
            return HubError(f"{what}: the Hub answered HTTP {code} (still after {self.settings.retries} retries); try again later")
        return HubError(f"{what}: HTTP {code}{said}")


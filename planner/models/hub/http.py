"""Access to the Hugging Face Hub through huggingface_hub: its token resolution (HF_TOKEN, then the `hf auth login`
file), its clients (HfApi, HfFileSystem; redirects to the CDN without carrying the token to another host), with 429/5xx
retried with backoff around each call; every failure becomes one clear line naming the repo and the file.

huggingface_hub is imported here only, inside functions: `planner recommend` on a bundled profile never loads it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from planner import __version__
from planner.errors import PlannerError

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 3  # 429/5xx answers retried (1 s, 2 s, 4 s or the Retry-After): assumed, as huggingface_hub's http_backoff
T = TypeVar("T")
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


@contextmanager
def counting_requests() -> Iterator[list[int]]:  # len() of it is the count
    """Count the HTTP requests huggingface_hub's shared session sends meanwhile (HEADs, redirects and retries
    included): `inspect` reports them."""
    from huggingface_hub.utils import get_session

    hooks, sent = get_session().event_hooks["request"], []

    def count(request: Any) -> None:
        sent.append(1)  # list.append is atomic: the library reads shards from several threads

    hooks.append(count)
    try:
        yield sent
    finally:
        hooks.remove(count)


def _file_named(url: str) -> str:
    """' FILE' from a Hub file URL (/resolve/REV/FILE), '' for any other URL: for errors that name the file."""
    return f" {unquote(url.split('/resolve/', 1)[1].split('/', 1)[1])}" if "/resolve/" in url else ""


class RangeIgnoredError(Exception):
    """A ranged request answered with the whole file (200, not 206): reading on would download weights."""


@contextmanager
def range_reads_only() -> Iterator[None]:
    """Meanwhile, a ranged request to huggingface_hub's shared session that is answered with the whole file is closed
    before its body is read, and raises RangeIgnoredError: the library reads its 100 kB header window into memory and
    would otherwise take a whole shard from a mirror that ignores Range (planner never downloads weights)."""
    from huggingface_hub.utils import get_session

    hooks = get_session().event_hooks["response"]

    def check(response: Any) -> None:
        if response.status_code == 200 and "range" in response.request.headers:
            response.close()  # response hooks run before the body is read
            raise RangeIgnoredError(str(response.request.url))

    hooks.append(check)
    try:
        yield
    finally:
        hooks.remove(check)


class HubClient:
    """One repo on the Hub through huggingface_hub (HfApi, HfFileSystem); every error names the repo and the file, and
    429/5xx answers are retried with backoff."""

    def __init__(self, settings: HubSettings, repo: str):
        self.settings = settings
        self.repo = repo

    @property
    def page(self) -> str:
        """The repo's web page (where access to a gated repo is requested)."""
        return f"{self.settings.endpoint}/{self.repo}"

    @cached_property
    def api(self):  # type: ignore[no-untyped-def]
        """huggingface_hub's client on our endpoint, with our token and user agent."""
        from huggingface_hub import HfApi  # lazy: only the Hub path needs the library

        return HfApi(endpoint=self.settings.endpoint, token=self.settings.token or False,
                     library_name="llm-deploy-planner", library_version=__version__)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one library call; a 429/5xx answer is retried (Retry-After honoured, else 1 s, 2 s, 4 s), then any
        failure becomes one line naming `what`. (HfApi's own calls use a plain session, without http_backoff.)"""
        from huggingface_hub.errors import HfHubHTTPError

        for attempt in range(self.settings.retries + 1):
            with self.errors(what):
                try:
                    return fn()
                except HfHubHTTPError as exc:
                    code = exc.response.status_code if exc.response is not None else 0
                    if attempt == self.settings.retries or not (code == 429 or code >= 500):
                        raise
                    after = exc.response.headers.get("Retry-After", "") if exc.response is not None else ""
            time.sleep(min(int(after), 60) if after.isdigit() else 2 ** attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Turn huggingface_hub's and httpx's exceptions into one-line HubErrors naming `what`."""
        import httpx2  # huggingface_hub's HTTP client
        from huggingface_hub.errors import HfHubHTTPError

        try:
            yield
        except RangeIgnoredError as exc:
            name = _file_named(str(exc))
            raise HubError(f"{what}:{name}: the server ignores HTTP range requests, so the header cannot be read without "
                           "the whole file (planner never downloads weights)") from None
        except HfHubHTTPError as exc:
            raise self._status_error(exc, what) from None
        except httpx2.TimeoutException:
            raise HubError(f"{what}: no answer from {self.settings.endpoint} within {self.settings.timeout_s:g} s "
                           "(timed out; set PLANNER_HUB_TIMEOUT=SECONDS to wait longer)") from None
        except (httpx2.ConnectError, httpx2.ProxyError) as exc:
            raise HubError(f"{what}: cannot reach {self.settings.endpoint} ({exc}); check the network or HF_ENDPOINT") from None
        except (httpx2.HTTPError, OSError) as exc:
            raise HubError(f"{what}: the connection to {self.settings.endpoint} failed ({type(exc).__name__}: {exc})") from None

    def refused(self, what: str, name: str) -> HubError:
        """The listing names `name` but the Hub will not serve it (401 or 404): a private or gated repo, or a bad token."""
        sent = " The token sent (HF_TOKEN or the `hf auth login` file) was not accepted for it." if self.settings.token else ""
        return HubError(f"{what}: {name} is listed but not served: {self.repo} not found, or private or gated; for a "
                        f"private or gated repo set HF_TOKEN or run `hf auth login`.{sent}")

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
                name = _file_named(_request_url(resp))  # the library's calls name no file themselves
                return HubError(f"{what}: no such file{name} in {self.repo} (HTTP 404)")
            if err == "RevisionNotFound":
                return HubError(f"{what}: no such revision in {self.repo} (HTTP 404)")
            return HubError(f"{what}: {self.repo} not found on {self.settings.endpoint} (HTTP 404): check the repo id")
        if code == 429:
            return HubError(f"{what}: rate-limited by the Hub (HTTP 429, still after {self.settings.retries} retries); "
                            "try again later or log in (HF_TOKEN or `hf auth login`)")
        if code >= 500:
            return HubError(f"{what}: the Hub answered HTTP {code} (still after {self.settings.retries} retries); try again later")
        return HubError(f"{what}: HTTP {code}{said}")


def _request_url(resp: Any) -> str:
    try:
        return str(resp.request.url) if resp is not None else ""
    except RuntimeError:  # httpx: a response built without its request
        return ""

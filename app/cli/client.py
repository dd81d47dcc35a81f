"""A small synchronous client of the API, for the command line.

- ``FORMULA_OPS_URL`` and ``FORMULA_OPS_TOKEN``; without ``FORMULA_OPS_URL``, the server
  of this host as ``FORMULA_OPS_HOST``/``FORMULA_OPS_PORT`` configure it (what ``serve``
  and ``api`` listen on; default ``http://127.0.0.1:8000``).
- Problem details (RFC 9457) become :class:`ApiError` (type, title, detail, status); a
  server that cannot be reached becomes :class:`ConnectionFailed`.
- :meth:`Client.events` reads Server-Sent Events and, when the connection drops,
  reconnects with ``Last-Event-ID`` where it stopped (a bounded number of times in a row).

httpx is imported by the first :class:`Client`, not with this module: ``formula-ops api``
and ``formula-ops worker`` import the command line and never talk to the API.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from app.cli.output import fail, field_errors
from app.core.address import DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    import httpx

# The server's own defaults (``Settings.host``/``port``).
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
URL_VARIABLE = "FORMULA_OPS_URL"
HOST_VARIABLE = "FORMULA_OPS_HOST"
PORT_VARIABLE = "FORMULA_OPS_PORT"
# A server bound to every address is reached on loopback.
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": DEFAULT_HOST}
TOKEN_VARIABLE = "FORMULA_OPS_TOKEN"  # noqa: S105 - the variable's name
TIMEOUT_SECONDS = 30.0  # connecting: CONNECT_TIMEOUT_SECONDS
CONNECT_TIMEOUT_SECONDS = 5.0
# The server sends a keep-alive comment every 15 s; a silent minute is a dead connection.
STREAM_READ_TIMEOUT_SECONDS = 60.0
STREAM_TIMEOUT_SECONDS = 5.0  # connecting, writing
DEFAULT_RECONNECT = 1.0
MAX_RECONNECT = 10.0
_RETRYABLE_STATUS = frozenset({408, 425, 429, 502, 503, 504})
LIST_PAGE = 200  # items asked for per page when a command collects a list


class ClientError(Exception):
    """Anything that keeps the client from getting an answer; one line for the user."""


class ConfigurationError(ClientError):
    """The environment does not say where the API is or how to authenticate."""


class ConnectionFailed(ClientError):
    """The server could not be reached, or the connection kept dropping."""


class ApiError(ClientError):
    """An error answer, as its problem details."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        type: str = "about:blank",
        *,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.retry_after = retry_after
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """``title: detail (status)`` on one line."""
        text = (
            self.title
            if not self.detail or self.detail == self.title
            else (f"{self.title}: {self.detail}")
        )
        return f"{' '.join(text.split())} ({self.status})"

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """Read the problem details of ``response`` (already read), or make them up from
        its status when the body is not a problem (a proxy's HTML page, say)."""
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        retry_after = _retry_after(response.headers.get("Retry-After"))
        phrase = response.reason_phrase or "HTTP error"
        if not isinstance(body, dict):
            return cls(response.status_code, phrase, retry_after=retry_after)
        detail = body.get("detail")
        errors = body.get("errors")
        if isinstance(errors, list) and errors:  # 422: say which input was wrong
            items = [e for e in errors if isinstance(e, dict)]
            detail = "; ".join(field_errors(items, _request_field)) or detail
        return cls(
            int(body.get("status") or response.status_code),
            str(body.get("title") or phrase),
            str(detail) if detail is not None else None,
            str(body.get("type") or "about:blank"),
            retry_after=retry_after,
        )


def _request_field(loc: Sequence[Any]) -> str:
    """A 422 problem's location without the part of the request it was in."""
    return ".".join(str(part) for part in loc if part not in ("body", "query", "path"))


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: ``id`` (None when the frame had none), type and data."""

    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data) if self.data else None


class SseDecoder:
    """The event-stream format (WHATWG HTML, "Server-sent events"), a line at a time."""

    def __init__(self) -> None:
        self.retry: float | None = None  # seconds, from the last ``retry:`` field
        self.last_event_id: str | None = None
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        """The event a blank ``line`` dispatches, else None."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value) / 1000
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if self._id is not None:
            self.last_event_id = self._id
        event_id, self._id = self._id, None
        event, self._event = self._event or "message", ""
        data, self._data = self._data, []
        if not data:
            return None
        return ServerSentEvent(event=event, data="\n".join(data), id=event_id)


def decode(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Every complete event of ``lines``; an unfinished last frame is dropped."""
    decoder = SseDecoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event


class Client:
    """The API at ``base_url`` with a bearer ``token``; use as a context manager."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx

        self._timeout = httpx.Timeout(TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
        self._stream_timeout = httpx.Timeout(
            STREAM_TIMEOUT_SECONDS, read=STREAM_READ_TIMEOUT_SECONDS
        )
        headers = {"Accept": "application/json, application/problem+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._sleep = sleep
        try:
            self._http = httpx.Client(
                base_url=self.base_url,
                headers=headers,
                timeout=self._timeout,
                transport=transport,
                follow_redirects=False,
                trust_env=True,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise ConfigurationError(f"{URL_VARIABLE}={base_url!r} is not a URL: {exc}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, public: bool = False) -> Client:
        """The client ``FORMULA_OPS_URL`` and ``FORMULA_OPS_TOKEN`` describe; ``public``:
        for routes without a token (the token is sent when set)."""
        env = os.environ if environ is None else environ
        url = env.get(URL_VARIABLE) or default_url(env)
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{URL_VARIABLE} must start with http:// or https://")
        token = env.get(TOKEN_VARIABLE)
        if not token and not public:
            raise ConfigurationError(
                f"{TOKEN_VARIABLE} is not set: create a token (`formula-ops tokens create`) "
                "and export it"
            )
        return cls(url, token)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def url(self, path: str) -> str:
        """``path`` (as a ``Location`` gives it) as an absolute URL."""
        return str(self._http.base_url.join(path))

    # -- requests --------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float | None = None,
        retries: int = 0,
    ) -> httpx.Response:
        """A 2xx response, or :class:`ApiError` / :class:`ConnectionFailed`.

        ``retries``: how often to send the request again after a dropped connection or a
        busy answer (429, 503, an Idempotency-Key still in flight). Only for requests that
        are safe to repeat: reads, and writes with an ``Idempotency-Key``."""
        import httpx

        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    method,
                    path,
                    params=query,
                    json=json,
                    headers=dict(headers or {}),
                    timeout=timeout if timeout is not None else self._timeout,
                )
            except httpx.TransportError as exc:
                if attempt > retries:
                    raise ConnectionFailed(_transport_message(self.base_url, exc)) from None
                self._sleep(min(DEFAULT_RECONNECT * attempt, MAX_RECONNECT))
                continue
            if response.is_success:
                return response
            error = ApiError.from_response(response)
            if attempt > retries or not _retryable(error):
                raise error
            self._sleep(min(error.retry_after or DEFAULT_RECONNECT * attempt, MAX_RECONNECT))

    def get_json(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params, retries=2).json()

    # -- Server-Sent Events ----------------------------------------------------------

    def events(
        self,
        path: str,
        *,
        last_event_id: str | None = None,
        max_retries: int = 5,
        max_delay: float = MAX_RECONNECT,
    ) -> Generator[ServerSentEvent, None, None]:
        """The events of the stream at ``path``, across reconnections.

        The stream is followed until the caller stops iterating or the server answers
        204 (the format's "do not reconnect"). A dropped connection, or one the server
        ends, is opened again with ``Last-Event-ID``, after the delay the server asked for
        (``retry:``), growing with each failure; after ``max_retries`` failures in a row
        without an event, :class:`ConnectionFailed`. A 4xx answer is :class:`ApiError`."""
        import httpx

        last_id = last_event_id
        retry = DEFAULT_RECONNECT
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            decoder = SseDecoder()
            try:
                with self._http.stream(
                    "GET", path, headers=headers, timeout=self._stream_timeout
                ) as response:
                    if response.status_code == 204:
                        return
                    if not response.is_success:
                        response.read()
                        error = ApiError.from_response(response)
                        if not _retryable(error) and error.status < 500:
                            raise error
                        reason = error.message
                    else:
                        content_type = response.headers.get("content-type", "")
                        if not content_type.startswith("text/event-stream"):
                            raise ApiError(
                                response.status_code,
                                "Not an event stream",
                                f"{path} answered {content_type or 'no content type'}",
                            )
                        for line in response.iter_lines():
                            event = decoder.feed(line)
                            if decoder.retry is not None:
                                retry = decoder.retry
                            if event is None:
                                continue
                            if decoder.last_event_id is not None:
                                last_id = decoder.last_event_id
                            failures = 0
                            yield event
                        reason = "the server ended the stream"
            except httpx.TransportError as exc:
                reason = _transport_message(self.base_url, exc)
            failures += 1
            if failures > max_retries:
                raise ConnectionFailed(f"{reason}; gave up after {max_retries} reconnections")
            self._sleep(min(retry * failures, max_delay))


@contextmanager
def connect(*, public: bool = False) -> Iterator[Client]:
    """A client from the environment, for a command: any error it meets ends the command
    with one error line and exit code 2. ``public``: no token needed."""
    try:
        client = Client.from_env(public=public)
    except ClientError as exc:
        fail(str(exc))
    try:
        with client:
            yield client
    except ApiError as exc:
        fail(exc.message)
    except ClientError as exc:
        fail(str(exc))


def collect(client: Client, path: str, limit: int, **filters: Any) -> list[dict[str, Any]]:
    """The first ``limit`` items of the list at ``path``, page after page."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(found) < limit:
        page = client.get_json(
            path, **filters, limit=min(LIST_PAGE, limit - len(found)), cursor=cursor
        )
        found.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return found[:limit]


def default_url(environ: Mapping[str, str]) -> str:
    """The API of this host, where ``serve`` and ``api`` listen: ``FORMULA_OPS_HOST`` and
    ``FORMULA_OPS_PORT`` (the server's own settings), else ``http://127.0.0.1:8000``."""
    host = environ.get(HOST_VARIABLE, "").strip()
    host = _ANY_ADDRESS.get(host, host)
    port_text = environ.get(PORT_VARIABLE, "").strip() or str(DEFAULT_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"{PORT_VARIABLE}={port_text!r} is not a port number")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{int(port_text)}"


def _retryable(error: ApiError) -> bool:
    return error.status in _RETRYABLE_STATUS or error.type.endswith("/idempotency-key-in-flight")


def _transport_message(base_url: str, exc: httpx.TransportError) -> str:
    import httpx

    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return f"Cannot reach {base_url} ({type(exc).__name__})"
    if isinstance(exc, httpx.TimeoutException):
        return f"{base_url} did not answer in time ({type(exc).__name__})"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return f"{base_url} is not an http:// or https:// URL"
    return f"The connection to {base_url} failed ({type(exc).__name__})"

"""``security_log_scan``: the runbook's log analysis of Security Operations, as a parser.

The runbook greps the logs::

    ... logs | grep -E "(failed|unauthorized|403|401)" | tail -20
    ... logs | grep "login.*failed" | cut -d' ' -f1-3 | sort | uniq -c | sort -nr

Here each line is parsed instead (:func:`scan`, a pure function over lines, so container
logs can be fed to it as well as files): failed logins and 401/403 answers are counted
by their source, the client address (or the user when no address is given), read from
Nginx/Apache common and combined access lines, uvicorn access lines, JSON lines (``status``,
``ip``/``remote_addr``… fields) and free text ("login failed for bob from 10.0.0.5",
sshd's "Failed password for root from …"). A source with at least ``threshold`` failures
makes the step a warning and is announced as ``security.suspicious_activity``.

Sample lines are redacted (:func:`app.core.redaction.redact_text`: credential headers,
bearer credentials, secret query parameters, URL userinfo) before they are kept.
Files are read only inside the folders an admin allowed (:mod:`.paths`), newest first,
each from the end: at most ``max_lines`` lines in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import stat
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from app.core.db import utcnow
from app.core.paths import V1
from app.core.redaction import redact_text
from app.core.registry import Registry
from app.environments.schemas import NAME
from app.outbox.catalog import EVENT_TYPES, EventData, EventLinks, EventType
from app.outbox.service import add_event
from app.runbooks.actions.paths import PathRefused, log_roots, resolve_inside
from app.runs.actions import ACTIONS, Action, Params, StepContext, StepOutcome, bounded
from app.runs.models import Level, StepStatus

SUSPICIOUS_ACTIVITY = "security.suspicious_activity"
SAMPLE_CHARS = 500  # of one sample line
KEPT_CHARS = 2 * SAMPLE_CHARS  # a longer line is kept in its shown form
SAMPLES = 20  # the runbook's `tail -20`
SOURCE_SAMPLES = 3
MAX_SOURCES = 10_000  # distinct sources tracked; the rest are counted together
OTHER_SOURCES = "(other sources)"
MAX_EVENTS = 20  # suspicious sources announced by one step
LINE_BYTES = 16 * 1024  # a longer line is cut there
TAIL_BYTES = 256 * 1024 * 1024  # read of one file at most
QUIET_SKIPS = ("not modified in the window", "compressed")  # not worth a warning
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4")

# -- parsing -----------------------------------------------------------------------------

# `docker compose logs`: "backend-1  | <line>"
_COMPOSE_PREFIX = re.compile(r"^[A-Za-z0-9][\w.-]*\s+\|\s?")
# Common and combined log format (Nginx, Apache).
_ACCESS = re.compile(
    r'^(?P<ip>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" '
    r"(?P<status>\d{3}) "
)
# uvicorn: 'INFO:     127.0.0.1:54321 - "GET /x HTTP/1.1" 401 Unauthorized'
_UVICORN = re.compile(
    r'(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):\d+ - "(?P<request>[^"]*)" '
    r"(?P<status>\d{3})\b"
)
_IPV4 = re.compile(r"(?:0|[1-9]\d{0,2})(?:\.(?:0|[1-9]\d{0,2})){3}")
_LOGIN_PATH = re.compile(r"(?i)(?:log-?in|sign-?in|logon)")
_FAILED_LOGIN = re.compile(
    r"(?i)(?:log-?in|logon|sign-?in|authenticat\w*).*fail"
    r"|fail\w*.*(?:log-?in|logon|sign-?in|password|authenticat)"
)
# The runbook's first grep, case-insensitive (after a cheaper look for its words).
_SUSPICIOUS = re.compile(r"(?i)fail|unauthori[sz]ed|forbidden|(?<!\d)40[13](?!\d)")
_SUSPICIOUS_WORDS = ("fail", "unauthori", "forbidden", "401", "403")
_LOGIN_WORDS = ("log-in", "login", "logon", "sign-in", "signin", "password", "authenticat")
_STATUS_TEXT = re.compile(
    r"(?i)(?:\bstatus(?:_code)?|\bcode|\bHTTP/\d(?:\.\d)?\"?)[\s=:\"]{0,3}(?P<status>40[13])\b"
    r"|\b(?P<named>401 Unauthori[sz]ed|403 Forbidden)\b"
)
_UNAUTHORIZED_WORD = re.compile(r"(?i)\bunauthori[sz]ed\b")
_FORBIDDEN_WORD = re.compile(r"(?i)\bforbidden\b")
_IP_AFTER = re.compile(
    r"(?i)(?:\bfrom|\brhost=|\bclient[=:]?|\bip[=:]|\baddr(?:ess)?[=:]|\bsrc[=:]|"
    r"\bremote_addr[=:])\s*\[?(?P<ip>[0-9A-Fa-f:.]{3,45})"
)
_ANY_IP = re.compile(
    r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w.:])"
)
_USER = re.compile(
    r"(?i)\bfor (?:invalid |illegal )?(?:user )?(?P<for>[\w.@+-]{1,64}) from\b"
    r"|\b(?:user(?:name)?|account|login)[=:]\s*[\"']?(?P<named>[\w.@+-]{1,64})"
    r"|\bfor user (?P<user>[\w.@+-]{1,64})"
)
_ISO_TIME = re.compile(
    r"(?P<t>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_SYSLOG_TIME = re.compile(
    r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2})"
)
# The access log's "10/Oct/2026:13:55:36 +0000".
_ACCESS_TIME = re.compile(r"^(\d{2})/(\w{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$")

_JSON_STATUS = ("status", "status_code", "statusCode", "http_status", "response_status", "code")
_JSON_IP = (
    "ip",
    "remote_addr",
    "remoteAddr",
    "remote_ip",
    "client_ip",
    "clientIp",
    "client_addr",
    "source_ip",
    "src_ip",
    "client",
    "remoteAddress",
)
_JSON_USER = ("user", "username", "remote_user", "user_name", "user_id", "userId", "email")
_JSON_MESSAGE = ("message", "msg", "event", "error", "error_message", "log")
_JSON_TIME = ("time", "timestamp", "@timestamp", "ts", "datetime", "date")
_JSON_NESTED = ("request", "req", "response", "res", "http", "client", "context")


@dataclass
class Parsed:
    """What one line says: its failures, its source and its time (when given)."""

    failed_login: bool = False
    unauthorized: bool = False  # 401
    forbidden: bool = False  # 403
    matched: bool = False  # by the runbook's grep
    ip: str | None = None
    user: str | None = None
    time: dt.datetime | None = None

    @property
    def failure(self) -> bool:
        return self.failed_login or self.unauthorized or self.forbidden

    @property
    def source(self) -> str | None:
        if self.ip:
            return self.ip
        return f"user {self.user}" if self.user else None


def _ip(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.split(",")[0].strip().strip("[]")  # X-Forwarded-For: the client first
    if _IPV4.fullmatch(text):  # the common case, without the ipaddress module's cost
        return text if all(int(octet) <= 255 for octet in text.split(".")) else None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        host, sep, port = text.rpartition(":")  # 10.0.0.5:43122
        if sep and port.isdigit():
            return _ip(host)
        return None


def _user(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("name") or value.get("email") or value.get("id")
    if isinstance(value, int | str) and str(value) not in ("", "-"):
        return str(value)[:64]  # redacted when shown
    return None


def _time(value: Any) -> dt.datetime | None:
    """A timestamp as logs write them: ISO 8601, the access log's
    ``10/Oct/2026:13:55:36 +0000``, seconds (or milliseconds) since the epoch."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value
        with contextlib.suppress(OverflowError, OSError, ValueError):
            return dt.datetime.fromtimestamp(seconds, dt.UTC)
        return None
    if not isinstance(value, str):
        return None
    access = _ACCESS_TIME.match(value)
    if access:
        day, month, year, hour, minute, second, sign, hours, minutes = access.groups()
        offset = dt.timedelta(hours=int(hours), minutes=int(minutes))
        with contextlib.suppress(ValueError, KeyError):
            return dt.datetime(
                int(year),
                _MONTHS[month],
                int(day),
                int(hour),
                int(minute),
                int(second),
                tzinfo=dt.timezone(-offset if sign == "-" else offset),
            )
        return None
    match = _ISO_TIME.search(value)
    if match:
        with contextlib.suppress(ValueError):
            parsed = dt.datetime.fromisoformat(match.group("t").replace(",", "."))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def _syslog_time(text: str, now: dt.datetime) -> dt.datetime | None:
    """``Dec  3 06:30:22`` (no year: this year's, or last year's if that is ahead)."""
    match = _SYSLOG_TIME.match(text)
    if not match:
        return None
    month, day, hour, minute, second = match.groups()
    try:
        parsed = dt.datetime(
            now.year, _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=dt.UTC
        )
    except ValueError:
        return None
    return parsed.replace(year=now.year - 1) if parsed > now + dt.timedelta(days=1) else parsed


def _field(record: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = record.get(name)
        if value in (None, "") or (name in _JSON_NESTED and isinstance(value, Mapping)):
            continue
        return value
    for nested in _JSON_NESTED:
        inner = record.get(nested)
        if isinstance(inner, Mapping):
            for name in names:
                if name in inner and inner[name] not in (None, ""):
                    return inner[name]
    return None


def _status(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _suspicious(lower: str) -> bool:
    return any(word in lower for word in _SUSPICIOUS_WORDS) and bool(_SUSPICIOUS.search(lower))


def _failed_login(text: str) -> bool:
    lower = text.lower()
    return (
        "fail" in lower
        and any(word in lower for word in _LOGIN_WORDS)
        and bool(_FAILED_LOGIN.search(text))
    )


def _free_text(text: str, lower: str, parsed: Parsed) -> None:
    """What free text says: failed logins, 401/403, the address after "from"…"""
    if _failed_login(text):
        parsed.failed_login = True
    status = _STATUS_TEXT.search(text) if "401" in lower or "403" in lower else None
    code = (status.group("status") or status.group("named")[:3]) if status else None
    if code == "401" or ("unauthori" in lower and _UNAUTHORIZED_WORD.search(text)):
        parsed.unauthorized = True
    if code == "403" or ("forbidden" in lower and _FORBIDDEN_WORD.search(text)):
        parsed.forbidden = True
    if parsed.ip is None:
        after = _IP_AFTER.search(text)
        parsed.ip = _ip(after.group("ip")) if after else None
    if parsed.ip is None:
        for candidate in _ANY_IP.findall(text):
            parsed.ip = _ip(candidate)
            if parsed.ip:
                break
    if parsed.user is None:
        user = _USER.search(text)
        if user:
            parsed.user = _user(user.group("for") or user.group("named") or user.group("user"))


def _http(parsed: Parsed, status: int | None, request: str) -> None:
    if status == 401:
        parsed.unauthorized = True
    elif status == 403:
        parsed.forbidden = True
    if status in (401, 403) and _LOGIN_PATH.search(request):
        parsed.failed_login = True


def parse_line(line: str, now: dt.datetime | None = None) -> Parsed:
    """One log line's failures, source and time (a pure function)."""
    text = line.rstrip("\r\n")
    if "|" in text[:80]:
        text = _COMPOSE_PREFIX.sub("", text, count=1)
    lower = text.lower()
    parsed = Parsed(matched=_suspicious(lower))
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            record = json.loads(stripped)
        except (ValueError, RecursionError):  # a line nested deeper than Python recurses
            record = None
        if isinstance(record, dict):
            message = _field(record, _JSON_MESSAGE)
            message = message if isinstance(message, str) else ""
            parsed.ip = _ip(_field(record, _JSON_IP))
            parsed.user = _user(_field(record, _JSON_USER))
            parsed.time = _time(_field(record, _JSON_TIME))
            status = _status(_field(record, _JSON_STATUS))
            path = _field(record, ("path", "url", "uri", "request", "route"))
            _http(parsed, status, f"{path if isinstance(path, str) else ''} {message}")
            if _failed_login(message):
                parsed.failed_login = True
            if message and (parsed.ip is None or parsed.user is None):
                _free_text(message, message.lower(), parsed)  # "... from 10.0.0.5"
            parsed.matched = parsed.matched or parsed.failure
            return parsed
    access = _ACCESS.match(text)
    if access:
        parsed.ip = _ip(access.group("ip")) or access.group("ip")[:64]
        parsed.user = _user(access.group("user"))
        parsed.time = _time(access.group("time"))
        _http(parsed, int(access.group("status")), access.group("request"))
        parsed.matched = parsed.failure
        return parsed
    uvicorn = _UVICORN.search(text) if ' - "' in text else None
    if uvicorn:
        parsed.ip = _ip(uvicorn.group("ip"))
        parsed.time = _time(text[:40])
        _http(parsed, int(uvicorn.group("status")), uvicorn.group("request"))
        parsed.matched = parsed.failure
        return parsed
    parsed.time = _syslog_time(text, now or utcnow()) or _time(text[:48])
    if parsed.matched:
        _free_text(text, lower, parsed)
    return parsed


def sample(line: str) -> str:
    """A line as it may be shown: redacted, then cut."""
    text = redact_text(line.rstrip("\r\n"))
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "…"


def kept(line: str) -> str:
    """A line as a sample holds it until shown: as read (redacted when shown: most are
    pushed out before), or when long, shown form at once. Clients write the lines:
    :data:`MAX_SOURCES` sources of :data:`SOURCE_SAMPLES` lines of :data:`LINE_BYTES`
    would otherwise hold half a gigabyte."""
    return line if len(line) <= KEPT_CHARS else sample(line)


@dataclass
class Source:
    """Failures of one client address (or user)."""

    source: str
    ip: str | None = None
    users: set[str] = field(default_factory=set)
    failures: int = 0
    failed_logins: int = 0
    unauthorized: int = 0
    forbidden: int = 0
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    samples: deque[str] = field(default_factory=lambda: deque(maxlen=SOURCE_SAMPLES))

    def add(self, parsed: Parsed, line: str) -> None:
        self.failures += 1
        self.failed_logins += parsed.failed_login
        self.unauthorized += parsed.unauthorized
        self.forbidden += parsed.forbidden
        if parsed.user and len(self.users) < 5:
            self.users.add(parsed.user)
        if parsed.time is not None:
            if self.first_seen is None or parsed.time < self.first_seen:
                self.first_seen = parsed.time
            if self.last_seen is None or parsed.time > self.last_seen:
                self.last_seen = parsed.time
        self.samples.append(kept(line))

    def as_data(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ip": self.ip,
            "users": self.shown_users(),
            "failures": self.failures,
            "failed_logins": self.failed_logins,
            "unauthorized": self.unauthorized,
            "forbidden": self.forbidden,
            "first_seen": self.first_seen.isoformat() if self.first_seen else None,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "sample_lines": self.sample_lines(),
        }

    def sample_lines(self) -> list[str]:
        return [sample(line) for line in self.samples]

    def shown_users(self) -> list[str]:
        return sorted(redact_text(user) for user in self.users)


@dataclass
class Report:
    threshold: int
    lines_scanned: int = 0
    lines_matched: int = 0
    outside_window: int = 0
    failed_logins: int = 0
    unauthorized: int = 0
    forbidden: int = 0
    unattributed: int = 0  # failures without an address or user
    sources: dict[str, Source] = field(default_factory=dict)
    samples: deque[str] = field(default_factory=lambda: deque(maxlen=SAMPLES))

    def ranked(self) -> list[Source]:
        """Sources by failures, most first (ties: by name)."""
        return sorted(self.sources.values(), key=lambda s: (-s.failures, s.source))

    def suspicious(self) -> list[Source]:
        """Sources with at least ``threshold`` failures (never the lump of the others)."""
        return [
            s for s in self.ranked() if s.failures >= self.threshold and s.source != OTHER_SOURCES
        ]

    def as_data(self, top: int = 10) -> dict[str, Any]:
        ranked = self.ranked()
        return {
            "threshold": self.threshold,
            "lines_scanned": self.lines_scanned,
            "lines_matched": self.lines_matched,
            "lines_outside_window": self.outside_window,
            "failed_logins": self.failed_logins,
            "unauthorized": self.unauthorized,
            "forbidden": self.forbidden,
            "unattributed": self.unattributed,
            "source_count": len(self.sources),
            "top_sources": [s.as_data() for s in ranked[:top]],
            "suspicious": [s.source for s in self.suspicious()],
            "sample_lines": self.sample_lines(),
        }

    def sample_lines(self) -> list[str]:
        return [sample(line) for line in self.samples]


def scan(lines: Iterable[str], threshold: int, *, since: dt.datetime | None = None) -> Report:
    """Failed logins and 401/403 answers of ``lines``, by source. A line whose time is
    known and earlier than ``since`` is not counted. Memory is bounded by the number of
    distinct sources (at most :data:`MAX_SOURCES`; the rest are counted together)."""
    report = Report(threshold=threshold)
    now = utcnow()
    for line in lines:
        parsed = parse_line(line, now)
        if since is not None and parsed.time is not None and parsed.time < since:
            report.outside_window += 1
            continue
        report.lines_scanned += 1
        if not parsed.matched:
            continue
        report.lines_matched += 1
        report.samples.append(kept(line))
        if not parsed.failure:
            continue
        report.failed_logins += parsed.failed_login
        report.unauthorized += parsed.unauthorized
        report.forbidden += parsed.forbidden
        key = parsed.source
        if key is None:
            report.unattributed += 1
            continue
        if key not in report.sources and len(report.sources) >= MAX_SOURCES:
            key = OTHER_SOURCES
        entry = report.sources.get(key)
        if entry is None:
            entry = report.sources[key] = Source(key, parsed.ip if key != OTHER_SOURCES else None)
        entry.add(parsed, line)
    return report


# -- reading files -----------------------------------------------------------------------


class Stopped(Exception):
    """The step was cancelled or timed out while its thread read."""


@dataclass
class Files:
    """The files a scan reads, and what could not be read."""

    files: list[Path] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def list_files(paths: list[Path], not_before: float | None) -> Files:
    """Regular files named (or directly inside a named folder), newest first; links
    inside a folder are not followed, compressed and older files are skipped."""
    found = Files()
    candidates: list[tuple[float, Path]] = []
    for path in paths:
        try:
            info = path.lstat()
        except OSError as exc:
            found.skipped.append({"path": str(path), "reason": exc.strerror or "unreadable"})
            continue
        if stat.S_ISDIR(info.st_mode):
            try:
                entries = list(os.scandir(path))
            except OSError as exc:
                found.skipped.append({"path": str(path), "reason": exc.strerror or "unreadable"})
                continue
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.name.endswith(COMPRESSED):
                    found.skipped.append({"path": entry.path, "reason": "compressed"})
                    continue
                with contextlib.suppress(OSError):
                    candidates.append((entry.stat(follow_symlinks=False).st_mtime, Path(entry)))
        elif stat.S_ISREG(info.st_mode):
            candidates.append((info.st_mtime, path))
        else:
            found.skipped.append({"path": str(path), "reason": "not a file or folder"})
    seen: set[Path] = set()
    for mtime, path in sorted(candidates, key=lambda c: -c[0]):
        if path in seen:
            continue
        seen.add(path)
        if not_before is not None and mtime < not_before:
            found.skipped.append({"path": str(path), "reason": "not modified in the window"})
            continue
        found.files.append(path)
    return found


def _tail_offset(fd: int, size: int, lines: int) -> int:
    """Where the last ``lines`` lines of the file start (at most :data:`TAIL_BYTES` back)."""
    floor = max(0, size - TAIL_BYTES)
    position, count = size, 0
    block_size = 64 * 1024
    while position > floor:
        step = min(block_size, position - floor)
        position -= step
        block = os.pread(fd, step, position)
        if position + step == size and block.endswith(b"\n"):
            count -= 1  # the file's last line break ends the last line
        count += block.count(b"\n")
        if count >= lines:
            skip = count - lines + 1  # line breaks of this block before the wanted start
            index = -1
            for _ in range(skip):
                index = block.index(b"\n", index + 1)
            return position + index + 1
    return floor


def read_lines(files: list[Path], max_lines: int, stop: threading.Event) -> Iterator[str]:
    """The last lines of each file, newest file first, ``max_lines`` in all; a file is
    opened without following a link (it was resolved inside an allowed folder)."""
    remaining = max_lines
    for path in files:
        if remaining <= 0:
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                continue
            handle.seek(_tail_offset(fd, info.st_size, remaining))
            while remaining > 0:
                raw = handle.readline(LINE_BYTES)
                if not raw:
                    break
                if len(raw) == LINE_BYTES and not raw.endswith(b"\n"):
                    rest = raw
                    while rest and not rest.endswith(b"\n"):  # the rest of a long line
                        rest = handle.readline(LINE_BYTES)
                remaining -= 1
                if remaining % 1000 == 0 and stop.is_set():
                    raise Stopped
                yield raw.decode(errors="replace")


# -- the action --------------------------------------------------------------------------

LogPath = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class SecurityLogScanParams(Params):
    environment: str | None = Field(
        default=None, pattern=NAME, description="Named in the events (the logs' environment)."
    )
    paths: list[LogPath] = Field(
        min_length=1,
        max_length=50,
        description="Log files or folders (their files, not sub-folders), inside "
        "FORMULA_OPS_RUNBOOKS__LOG_PATHS or the control plane's own service logs.",
    )
    since_minutes: int | None = Field(
        default=24 * 60,
        ge=1,
        le=90 * 24 * 60,
        description="Only files modified, and lines written (when their time is given), "
        "this recently; null: whatever the files hold.",
    )
    max_lines: int = Field(default=100_000, ge=1, le=1_000_000, description="Lines read in all.")
    threshold: int = Field(
        default=10, ge=1, le=1_000_000, description="Failures of one source that are suspicious."
    )
    top: int = Field(default=10, ge=1, le=100, description="Sources listed.")


class SuspiciousActivityData(EventData):
    """A client address (or user) failed to log in, or was refused, at least
    ``threshold`` times in the logs a ``security_log_scan`` step read."""

    environment: str | None = Field(description="The logs' environment, when the step named it.")
    source: str = Field(description="The client address, or `user <name>` without one.")
    ip: str | None
    users: list[str] = Field(description="Users the failing lines named (at most 5).")
    failures: int = Field(description="Lines with a failed login or a 401/403 answer.")
    failed_logins: int
    unauthorized: int = Field(description="401 answers.")
    forbidden: int = Field(description="403 answers.")
    threshold: int
    window_minutes: int | None = Field(description="How far back the step looked (null: all).")
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    sample_lines: list[str] = Field(description="The source's last lines, redacted.")
    run_id: str
    links: EventLinks


def suspicious_data(source: Source, params: SecurityLogScanParams, run_id: str) -> dict[str, Any]:
    return SuspiciousActivityData(
        environment=params.environment,
        source=source.source,
        ip=source.ip,
        users=source.shown_users(),
        failures=source.failures,
        failed_logins=source.failed_logins,
        unauthorized=source.unauthorized,
        forbidden=source.forbidden,
        threshold=params.threshold,
        window_minutes=params.since_minutes,
        first_seen=source.first_seen,
        last_seen=source.last_seen,
        sample_lines=source.sample_lines(),
        run_id=run_id,
        links=EventLinks(self=f"{V1}/runs/{run_id}"),
    ).model_dump(mode="json")


async def security_log_scan(params: SecurityLogScanParams, ctx: StepContext) -> StepOutcome:
    roots = log_roots(ctx.context.settings)
    try:
        resolved = [resolve_inside(path, roots)[0] for path in params.paths]
    except PathRefused as exc:
        return StepOutcome(StepStatus.FAILURE, error=f"refused: {exc}")
    since = (
        utcnow() - dt.timedelta(minutes=params.since_minutes)
        if params.since_minutes is not None
        else None
    )
    not_before = time.time() - params.since_minutes * 60 if params.since_minutes else None
    stop = threading.Event()

    def work() -> tuple[Files, Report]:
        files = list_files(resolved, not_before)
        lines = read_lines(files.files, params.max_lines, stop)
        return files, scan(lines, params.threshold, since=since)

    try:
        files, report = await asyncio.to_thread(work)
    except BaseException:
        stop.set()  # the thread ends at its next thousand lines
        raise
    suspicious = report.suspicious()
    for source in suspicious:
        await ctx.log(f"{source.source}: {source.failures} failure(s)")
    if suspicious:
        async with ctx.context.unit_of_work() as uow:
            for source in suspicious[:MAX_EVENTS]:
                await add_event(
                    uow.session,
                    "security.suspicious_activity",  # a literal: the catalog test reads it
                    suspicious_data(source, params, ctx.run_id),
                )
    unreadable = [s for s in files.skipped if s["reason"] not in QUIET_SKIPS]
    summary = (
        f"{report.failed_logins} failed login(s), {report.unauthorized} 401, "
        f"{report.forbidden} 403 in {report.lines_scanned} line(s) of {len(files.files)} "
        f"file(s); "
        + (
            f"{len(suspicious)} source(s) with ≥ {params.threshold} failures"
            if suspicious
            else f"no source with ≥ {params.threshold} failures"
        )
    )
    data = {
        "summary": summary,
        **report.as_data(params.top),
        "events": min(len(suspicious), MAX_EVENTS),
        "files": [str(p) for p in files.files[:100]],
        "skipped": files.skipped[:100],
    }
    level = Level.WARNING if suspicious or unreadable else Level.OK
    lines = [summary, *(f"  {s.source}: {s.failures}" for s in report.ranked()[: params.top])]
    lines += ["last matching lines:", *report.sample_lines()] if report.samples else []
    output, _ = bounded("\n".join(lines))
    return StepOutcome(StepStatus.SUCCESS, output, level, data)


EVENT = EventType(
    SUSPICIOUS_ACTIVITY,
    "A log scan found a client address or user with repeated failed logins or 401/403 "
    "answers (at least the step's threshold).",
    SuspiciousActivityData,
    {
        "environment": "production",
        "source": "203.0.113.7",
        "ip": "203.0.113.7",
        "users": ["admin"],
        "failures": 42,
        "failed_logins": 40,
        "unauthorized": 40,
        "forbidden": 2,
        "threshold": 10,
        "window_minutes": 1440,
        "first_seen": "2026-01-01T11:02:13Z",
        "last_seen": "2026-01-01T11:58:40Z",
        "sample_lines": [
            '203.0.113.7 - - [01/Jan/2026:11:58:40 +0000] "POST /api/auth/login HTTP/1.1" '
            '401 61 "-" "python-requests/2.32"'
        ],
        "run_id": "01936f3e-8a10-7c3e-9f10-2b4d5e6f7a8b",
        "links": {"self": f"{V1}/runs/01936f3e-8a10-7c3e-9f10-2b4d5e6f7a8b"},
    },
)


def register(registry: Registry) -> None:
    registry[ACTIONS].add(
        "security_log_scan",
        Action(SecurityLogScanParams, security_log_scan, idempotent=True),
    )
    registry[EVENT_TYPES].add(EVENT.name, EVENT)

"""Notification channels: an endpoint whose destination is an apprise URL (``slack://…``,
``mailto://…``, ``mmost://…``…) and whose events arrive as a message rendered from a
per-event-type template, instead of a signed JSON POST.

The URL is a secret (it holds the chat service's token or the mail password): it is kept
sealed (``channel_sealed``, the same :class:`~app.core.sealing.Sealer` as signing
secrets) and only its masked form (:func:`masked`: the scheme, and the host where the
host is not itself a token) is stored in clear and shown. apprise's own log lines name
URLs with their tokens, so the ``apprise`` logger never passes records on to ours; an
attempt's error is built from the warnings apprise captured for that one call, scrubbed
of every part of the URL.

Destinations (SSRF). Only the schemes of :data:`SERVICES` are accepted; for each, the
hosts apprise will contact are read from the instantiated plugin (the SMTP server of a
``mailto://``, derived by apprise for known providers, is one of them). At creation and
again before every attempt, each host must be a fixed host of that chat service
(``hooks.slack.com``, ``discord.com``…) or be listed in
``FORMULA_OPS_WEBHOOKS__CHANNEL_HOSTS``, and every address it resolves to must pass the
:class:`~app.webhooks.guard.AddressGuard`. What remains: apprise connects with
``requests``/``smtplib``, which resolve the name again themselves, so a name whose DNS
answer changes between our check and their connection is not re-checked. The host
allow-list is what covers that: a fixed host belongs to the chat service, and any other
host was listed by the server's administrator; neither is a name an API caller controls
(the caller can only pick among them), unlike a webhook URL, whose connection goes through
the guarded resolver. Redirects are never followed (forced off on every plugin, whatever
the URL says), certificates always verified, apprise's own retries off (ours apply), and
its persistent storage kept in memory (nothing written to disk). ``requests`` honours a
proxy set in the worker's environment (``HTTPS_PROXY``), which webhooks never use: set
none for workers, or the proxy (not the guard) resolves the channel's hosts.

apprise (and the ``requests``/``xml`` it brings) is imported when a channel URL is first
instantiated, not with this module, which the API and the worker import for the
templates and masking alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
import string
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from app.core.db import utcnow
from app.core.redaction import REDACTED, redact_text
from app.core.settings import WebhookSettings
from app.outbox.catalog import matches
from app.webhooks.guard import AddressGuard, UnsafeDestination, channel_host_allowed
from app.webhooks.headers import is_reserved
from app.webhooks.payloads import event_body
from app.webhooks.sender import AttemptResult

if TYPE_CHECKING:
    from apprise import AppriseAsset
    from apprise.plugins.base import NotifyBase

# apprise's ``NotifyType`` values a message is sent as.
Severity = Literal["info", "success", "failure"]

ERROR_CHARS = 500
VALUE_CHARS = 1000
MIN_SECRET_PART = 4


class ChannelRefused(ValueError):
    """A channel URL that is not accepted; the message never quotes the URL."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


Hosts = Callable[[Any], list[tuple[str, int]]]


def _own_host(plugin: Any) -> list[tuple[str, int]]:
    return [(plugin.host, plugin.port or (443 if plugin.secure else 80))]


def _slack_hosts(plugin: Any) -> list[tuple[str, int]]:
    mode = str(plugin.mode)
    if mode == "bot":
        return [("slack.com", 443)]
    if mode == "gov-hook":
        return [("hooks.slack-gov.com", 443)]
    return [("hooks.slack.com", 443)]


def _mail_hosts(plugin: Any) -> list[tuple[str, int]]:
    return [(plugin.smtp_host, plugin.port)]


def _ntfy_hosts(plugin: Any) -> list[tuple[str, int]]:
    if str(plugin.mode) == "cloud":
        return [("ntfy.sh", 443)]
    return _own_host(plugin)


@dataclass(frozen=True)
class ChannelService:
    """A chat or mail service a channel may name."""

    name: str
    hosts: Hosts
    # Hosts of the service itself (``*.suffix`` for its subdomains): allowed without
    # being listed in ``channel_hosts``.
    fixed_hosts: tuple[str, ...] = ()
    # The URL's "host" is a token (``slack://T…/B…/…``): never shown.
    host_is_secret: bool = False


_SLACK = ChannelService(
    "slack", _slack_hosts, ("hooks.slack.com", "slack.com", "hooks.slack-gov.com"), True
)
_DISCORD = ChannelService("discord", lambda _: [("discord.com", 443)], ("discord.com",), True)
# Microsoft Teams: apprise 2 posts through a Power Automate workflow (the Office 365
# connectors that ``msteams://`` used are retired).
_TEAMS = ChannelService(
    "workflows", _own_host, ("*.logic.azure.com", "*.environment.api.powerplatform.com")
)
_MATTERMOST = ChannelService("mmost", _own_host)
_MAIL = ChannelService("mailto", _mail_hosts)
_JSON = ChannelService("json", _own_host)
_FORM = ChannelService("form", _own_host)
_NTFY = ChannelService("ntfy", _ntfy_hosts, ("ntfy.sh",))

# Scheme → service: the only schemes a channel may use.
SERVICES: Mapping[str, ChannelService] = {
    "slack": _SLACK,
    "discord": _DISCORD,
    "workflow": _TEAMS,
    "workflows": _TEAMS,
    "mmost": _MATTERMOST,
    "mmosts": _MATTERMOST,
    "mailto": _MAIL,
    "mailtos": _MAIL,
    "json": _JSON,
    "jsons": _JSON,
    "form": _FORM,
    "forms": _FORM,
    "ntfy": _NTFY,
    "ntfys": _NTFY,
}


def scheme_of(url: str) -> str:
    return url.partition("://")[0].lower()


def masked(url: str) -> str:
    """What may be shown of a channel URL: its scheme, and its host (and port) unless the
    host is a token. ``mmost://chat.example.com/***``, ``slack://***``."""
    scheme = scheme_of(url)
    service = SERVICES.get(scheme)
    if service is None or service.host_is_secret:
        return f"{scheme}://***"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return f"{scheme}://***"
    if not host or not re.fullmatch(r"[a-z0-9.:\[\]-]+", host):
        return f"{scheme}://***"
    return f"{scheme}://{host}{f':{port}' if port else ''}/***"


def secret_parts(url: str) -> set[str]:
    """Every part of ``url`` but its scheme and non-secret host: the values no text
    produced while using it may show."""
    found = {url}
    scheme = scheme_of(url)
    rest = url.partition("://")[2]
    authority, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in authority:
        authority, _, query = authority.partition("?")
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        found.update(unquote(p) for p in re.split(r"[:]", userinfo, maxsplit=1))
        found.add(userinfo)
    service = SERVICES.get(scheme)
    if service is None or service.host_is_secret:
        found.add(unquote(hostport.rsplit(":", 1)[0]))
    found.update(unquote(p) for p in path.split("/"))
    found.update(value for _, value in parse_qsl(query, keep_blank_values=True))
    return {part for part in found if len(part) >= MIN_SECRET_PART}


@dataclass(frozen=True)
class Scrub:
    """Takes every secret part of a channel URL out of a text."""

    known: frozenset[str] = frozenset()

    @classmethod
    def of(cls, url: str) -> Scrub:
        return cls(frozenset(secret_parts(url)))

    def __call__(self, text: str) -> str:
        for part in sorted(self.known, key=len, reverse=True):
            text = text.replace(part, REDACTED)
        return redact_text(text)


# --- apprise's logs ------------------------------------------------------------------
# apprise logs the URLs it posts to, tokens included (DEBUG), and quotes a bad token in
# a warning; urllib3 (under requests) logs each request's path at DEBUG, where a chat
# token travels. So: the apprise logger passes nothing on and keeps only warnings, each
# scrubbed of the URL of the call in progress (its per-call capture, read for the
# attempt's error, sees the scrubbed text); urllib3 never logs below INFO, and within a
# channel call its lines are scrubbed too.

_SCRUB: contextvars.ContextVar[Scrub | None] = contextvars.ContextVar("channel_scrub", default=None)


class _Scrubbing(logging.Filter):
    def __init__(self, *, drop_outside: bool) -> None:
        super().__init__()
        self.drop_outside = drop_outside

    def filter(self, record: logging.LogRecord) -> bool:
        scrub = _SCRUB.get()
        if scrub is None:
            return not self.drop_outside
        record.msg, record.args = scrub(record.getMessage()), None
        return True


def _quiet_logs() -> None:
    apprise_logger = logging.getLogger("apprise")
    apprise_logger.propagate = False
    apprise_logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _Scrubbing) for f in apprise_logger.filters):
        apprise_logger.addFilter(_Scrubbing(drop_outside=True))
        apprise_logger.addHandler(logging.NullHandler())
    for name in ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry"):
        child = logging.getLogger(name)
        if child.getEffectiveLevel() < logging.INFO:
            child.setLevel(logging.INFO)
        if not any(isinstance(f, _Scrubbing) for f in child.filters):
            child.addFilter(_Scrubbing(drop_outside=False))


_quiet_logs()


@contextlib.contextmanager
def scrubbing(url: str) -> Iterator[Scrub]:
    """Within the block, apprise's and urllib3's log lines are scrubbed of ``url``."""
    scrub = Scrub.of(url)
    token = _SCRUB.set(scrub)
    try:
        yield scrub
    finally:
        _SCRUB.reset(token)


def _asset(settings: WebhookSettings) -> AppriseAsset:
    from apprise import AppriseAsset
    from apprise.common import PersistentStoreMode

    return AppriseAsset(
        storage_mode=PersistentStoreMode.MEMORY,
        http_redirects=False,
        allow_templates=False,
        secure_logging=True,
        service_timeout=settings.timeout_seconds,
        result_log_disk_size=0,
    )


@cache
def _load_plugins() -> None:
    """apprise imports its plugins on first use; one of them imports the deprecated
    ``imghdr`` (a DeprecationWarning, an error under the tests' warning filter)."""
    from apprise.manager_plugins import NotificationManager

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        NotificationManager().load_modules()  # type: ignore[no-untyped-call]


def instantiate(url: str, settings: WebhookSettings) -> tuple[ChannelService, NotifyBase]:
    """The apprise plugin for ``url`` (a scheme of :data:`SERVICES`), with what the URL
    may not change forced: no redirects, verified certificates, no apprise retries, our
    timeout, no OpenPGP key files or key lookups."""
    scheme = scheme_of(url)
    service = SERVICES.get(scheme)
    if service is None:
        raise ChannelRefused(
            "scheme",
            f"the scheme {scheme!r} is not a notification channel here; use one of "
            + ", ".join(sorted(SERVICES)),
        )
    from apprise import Apprise

    _load_plugins()
    with scrubbing(url):
        plugin = Apprise.instantiate(url, asset=_asset(settings))
    if plugin is None or scheme not in _schemes(plugin):
        raise ChannelRefused("url", f"the channel URL is not a valid {scheme}:// URL")
    if getattr(plugin, "use_wkd", False) or getattr(plugin, "pgp_key", None):
        raise ChannelRefused("url", "OpenPGP keys and key lookups are not supported")
    if getattr(plugin, "pgp_privkey", None):
        raise ChannelRefused("url", "OpenPGP keys and key lookups are not supported")
    reserved = sorted(n for n in (getattr(plugin, "headers", None) or {}) if is_reserved(n))
    if reserved:
        raise ChannelRefused("url", f"the channel URL may not set the headers {reserved}")
    plugin.redirects = False
    plugin.verify_certificate = True
    plugin.retry = 0
    plugin.socket_connect_timeout = settings.timeout_seconds
    plugin.socket_read_timeout = settings.timeout_seconds
    return service, plugin


def _schemes(plugin: NotifyBase) -> set[str]:
    found: set[str] = set()
    for value in (plugin.protocol, plugin.secure_protocol):
        if isinstance(value, str):
            found.add(value.lower())
        elif isinstance(value, Iterable):
            found.update(str(v).lower() for v in value)
    return found


async def check_hosts(
    service: ChannelService, plugin: NotifyBase, settings: WebhookSettings, guard: AddressGuard
) -> None:
    """Every host apprise will contact: allowed by name, and each of its addresses by
    ``guard`` (the sender's: the same networks and resolver as webhooks), the lookup
    bounded like a webhook's. Raises UnsafeDestination."""
    for host, port in service.hosts(plugin):
        shown = "the service's host" if service.host_is_secret else f"the host {host}"
        if not host:
            raise UnsafeDestination("host", "the channel URL names no host")
        if not channel_host_allowed(host, service.fixed_hosts, settings.channel_hosts):
            raise UnsafeDestination(
                "host",
                f"{shown} is not one of {service.name}'s own nor listed in "
                "FORMULA_OPS_WEBHOOKS__CHANNEL_HOSTS",
            )
        try:
            async with asyncio.timeout(min(settings.timeout_seconds, 5.0)):
                await guard.resolve(host, port)
        except UnsafeDestination as exc:
            if service.host_is_secret:
                raise UnsafeDestination(exc.reason, f"{shown} is refused ({exc.reason})") from None
            raise
        except (OSError, TimeoutError):
            raise UnsafeDestination("unresolvable", f"{shown} does not resolve") from None


# --- messages -----------------------------------------------------------------------

# A key, or dotted keys (list positions as numbers); no segment starts with "_".
_PLACEHOLDER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)*$")
_FORMATTER = string.Formatter()


def template_errors(template: str) -> list[str]:
    """Why ``template`` is refused: a placeholder other than a (dotted) key, a
    conversion (``!r``) or a format spec (``:>10``), unbalanced braces."""
    try:
        fields = list(_FORMATTER.parse(template))
    except ValueError as exc:
        return [f"the template is malformed: {exc}"]
    errors = []
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if not _PLACEHOLDER.match(name):
            errors.append(f"{{{name}}} is not a key or dotted key of the event")
        elif conversion or spec:
            errors.append(f"{{{name}}}: conversions and format specs are not supported")
    return errors


def _lookup(namespace: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    value: Any = namespace
    for part in name.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool | int | float):
        text = json.dumps(value)
    else:
        text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    return text[:VALUE_CHARS]


def render(template: str, body: Mapping[str, Any]) -> str:
    """``template`` with each ``{key}`` replaced by the event's value: ``type``,
    ``timestamp``, ``data`` and ``data.a.b``, or a top-level key of ``data`` alone
    (``{environment}``). Nothing else is evaluated (no attribute or item access, no
    format spec). A key the event lacks, and any refused placeholder, stay as written,
    so a template that does not fit an event shows it."""
    data = body.get("data") if isinstance(body.get("data"), Mapping) else {}
    assert isinstance(data, Mapping)
    namespace = {**data, "type": body["type"], "timestamp": body["timestamp"], "data": data}
    try:
        fields = list(_FORMATTER.parse(template))
    except ValueError:
        return template
    out: list[str] = []
    for literal, name, spec, conversion in fields:
        out.append(literal)
        if name is None:
            continue
        suffix = (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        written = "{" + name + suffix + "}"
        found, value = (False, None)
        if _PLACEHOLDER.match(name) and not conversion and not spec:
            found, value = _lookup(namespace, name)
        out.append(_text(value) if found else written)
    return "".join(out)


def template_for(templates: Mapping[str, str], event_type: str) -> str | None:
    """The most specific template for ``event_type``: its exact type, then the longest
    family pattern (``deployment.*``), then ``*``."""
    if event_type in templates:
        return templates[event_type]
    candidates = [p for p in templates if p != event_type and matches(p, event_type)]
    if not candidates:
        return None
    return templates[max(candidates, key=lambda p: (p != "*", len(p)))]


def default_body(body: Mapping[str, Any]) -> str:
    data = body.get("data") if isinstance(body.get("data"), Mapping) else {}
    assert isinstance(data, Mapping)
    lines = [f"{body['type']} at {body['timestamp']}"]
    for key, value in data.items():
        if key == "links" or isinstance(value, Mapping | list):
            continue
        lines.append(f"{key}: {_text(value)}")
    links = data.get("links")
    if isinstance(links, Mapping) and isinstance(links.get("self"), str):
        lines.append(f"link: {links['self']}")
    return "\n".join(lines)


def notify_type(event_type: str) -> Severity:
    last = event_type.rsplit(".", 1)[-1]
    if last in ("failed", "disabled", "down", "timed_out", "error"):
        return "failure"
    if last in ("succeeded", "up", "resolved", "completed"):
        return "success"
    return "info"


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    type: Severity = "info"


def message(templates: Mapping[str, str], event: Any) -> Message:
    """The title (``[Formula Ops] <type>``) and body of ``event``: its template rendered,
    or the default (the type, time and top-level values of the event)."""
    body = event_body(event)
    template = template_for(templates, event.type)
    text = render(template, body) if template is not None else default_body(body)
    return Message(f"[Formula Ops] {event.type}", text, notify_type(event.type))


# --- sending ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelResult(AttemptResult):
    """An attempt to a channel: no HTTP status of ours, success is apprise's answer."""

    delivered: bool = field(default=False)

    @property
    def succeeded(self) -> bool:
        return self.delivered


async def send(
    url: str,
    templates: Mapping[str, str],
    event: Any,
    settings: WebhookSettings,
    guard: AddressGuard,
) -> ChannelResult:
    """One attempt of ``event`` to the channel ``url``: the hosts checked, the message
    rendered and handed to apprise, within the webhook timeout."""
    with scrubbing(url) as scrub:
        return await _send(url, scrub, templates, event, settings, guard)


async def _send(
    url: str,
    scrub: Scrub,
    templates: Mapping[str, str],
    event: Any,
    settings: WebhookSettings,
    guard: AddressGuard,
) -> ChannelResult:
    started = utcnow()
    clock = time.perf_counter()

    def done(error: str | None = None) -> ChannelResult:
        elapsed = int((time.perf_counter() - clock) * 1000)
        return ChannelResult(
            started_at=started,
            duration_ms=elapsed,
            error=scrub(error)[:ERROR_CHARS] if error else None,
            delivered=error is None,
        )

    try:
        service, plugin = instantiate(url, settings)
        await check_hosts(service, plugin, settings, guard)
    except (ChannelRefused, UnsafeDestination) as exc:
        return done(f"refused: {exc}")
    from apprise import Apprise, NotifyFormat, NotifyType

    note = message(templates, event)
    notifier = Apprise(asset=plugin.asset)
    notifier.add(plugin)
    try:
        result = await asyncio.wait_for(
            notifier.async_notify(
                body=note.body,
                title=note.title,
                notify_type=NotifyType(note.type),
                body_format=NotifyFormat.TEXT,
                timeout=settings.timeout_seconds,
            ),
            settings.timeout_seconds + 1,
        )
    except TimeoutError:
        return done(f"no answer within {settings.timeout_seconds:g} s")
    except Exception as exc:  # apprise's own failure, whatever it is
        return done(f"{type(exc).__name__}: {exc}")
    if result:
        return done()
    reasons = [
        entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR", "CRITICAL")
    ]
    return done("; ".join(dict.fromkeys(reasons)) or f"{service.name} notification failed")

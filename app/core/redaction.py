"""The one rule for secrets: what of a value a reader may see, and what may be stored
where every reader looks (audit summaries, step output, run events, evidence, logs).

Secret-bearing parts, wherever they appear:

- **environment values** (a ``env`` mapping: of a service config, of a smoke test, of a
  step): every value, whatever its name;
- **URL userinfo** (``scheme://user:password@host``), in fields and inside any text
  (argv elements, step output, error messages), and URL query parameters named like a
  secret (``?token=…``, ``?key=…``, ``&sig=…``, ``?code=…``);
- **argv values of flags that name a secret**: ``--password=x``, ``--password x``,
  ``--db-password``, ``--token``, ``--secret``, ``--api-key``, ``--client-secret``,
  ``--auth-token``, ``--pass``, ``--auth``, ``--key``… (see :data:`SECRET_NAME` and
  ``_FLAG_WORDS``). Short flags are not: ``-p`` means a port
  to as many programs as a password, so it is shown;
- **credential headers** (``Authorization``, ``Proxy-Authorization``, ``Cookie``,
  ``Set-Cookie``, ``X-Api-Key``, ``X-Auth-Token``, and in a ``headers`` mapping every
  name holding ``auth`` or ``key``, e.g. ``X-Auth-Key``, ``Ocp-Apim-Subscription-Key``;
  a ``headers`` mapping, ``Name: value`` lines and ``Bearer`` credentials in text);
- **PEM private keys** (a TLS ``client_key``…) in any text, whole;
- keys named like a secret (``password``, ``token``, ``client_key``…) in any mapping, ``NAME=value``
  with such a name in text, and this service's own tokens (``fops_…``, ``whsec_…``).

Free text produced while running something (a command's output, a driver's error) is
also scrubbed of the *known values* of the secrets it was given (:func:`secrets_in`,
:class:`Scrubber`): a command may print its environment. Values shorter than
:data:`MIN_KNOWN_SECRET` characters are not looked for in text (they would match
ordinary words and numbers); they are still hidden wherever they are a field.

Admins read service configurations as written (they edit them); everything else —
audit summaries, step output, run events, evidence, logs — holds only the redacted
form, for every reader, admins included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from app.core.credentials import TOKEN_PREFIX

REDACTED = "[redacted]"
MIN_KNOWN_SECRET = 6

_WORDS = (
    r"passw(?:or)?d|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|client[_-]?key|credential|authorization|signature|cookie|session[_-]?id|requirepass"
    r"|masterauth"
)
# A name (mapping key, header, flag, query parameter, variable) that names a secret.
SECRET_NAME = re.compile(rf"(?:{_WORDS})", re.IGNORECASE)
_NAME = r"[A-Za-z0-9_.-]"
# A flag names a secret with fewer letters: --pass (redis-cli, openssl -pass),
# --auth user:pw, --key (an API key).
_FLAG_WORDS = rf"{_WORDS}|pass|auth|key"
# A URL query parameter does too: ?key= (Google APIs), &sig= (Azure SAS), ?code= (Azure
# Functions, OAuth), ?auth=.
_QUERY_WORDS = rf"{_WORDS}|key|sig|auth|code"
_SECRET_QUERY = re.compile(rf"(?i)[?&;]{_NAME}*(?:{_QUERY_WORDS}){_NAME}*=([^&#;\s\"']*)")
_HEADERS = (
    r"authorization|proxy-authorization|cookie|set-cookie|x-api-key|api-key|x-auth-token"
    r"|x-access-token|x-csrf-token|x-amz-security-token|private-token"
)
# The literal text every match of a rule contains (in ASCII lower case), as groups of
# alternatives: a match contains one alternative of every group. An ASCII text lacking
# them cannot match, and the rule is not run on it (every log record, event and step
# output is redacted: most of them hold no secret, and running each rule on each was about
# a twentieth of a worker's CPU). A text that is not ASCII goes through every rule: the
# rules ignore case by Unicode's rules (the Kelvin sign matches "k"), not by str.lower().
_Guard = tuple[tuple[str, ...], ...]
# One of them is in every word of _WORDS, _FLAG_WORDS and _HEADERS (a test spells out every
# word those patterns match and checks it).
_SECRET_WORD_STEMS = (
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
    "signature",
    "cookie",
    "session",
)
_TEXT_RULES: list[tuple[re.Pattern[str], str, _Guard]] = [
    # A PEM private key (a TLS client key…), whole.
    (
        re.compile(
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)",
            re.S,
        ),
        REDACTED,
        (("private key-----",),),
    ),
    # "Authorization: Bearer …" and the like: the rest of the line.
    (
        re.compile(rf"(?im)(\b(?:{_HEADERS})\s*:[ \t]*)[^\r\n]*"),
        rf"\1{REDACTED}",
        ((":",), ("auth", "cookie", "key", "token")),
    ),
    # Credentials of an authentication scheme, wherever they appear.
    (
        re.compile(r"(?i)\b(Bearer)([ \t]+)[A-Za-z0-9._~+/=:-]{8,}"),
        rf"\1\2{REDACTED}",
        (("bearer",),),
    ),
    # URL userinfo: everything between "://" and the last "@" of the authority.
    (
        re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@]*(?:@[^\s/?#@]*)*@"),
        rf"\1{REDACTED}@",
        (("://",), ("@",)),
    ),
    # URL query parameters named like a secret.
    (
        re.compile(rf"(?i)([?&;]{_NAME}*(?:{_QUERY_WORDS}){_NAME}*=)[^&#;\s\"']*"),
        rf"\1{REDACTED}",
        (("=",), ("?", "&", ";"), (*_SECRET_WORD_STEMS, "sig", "code")),
    ),
    # Flags naming a secret: --password=x, --password x.
    (
        re.compile(
            rf"(?i)((?<![\w-])--?{_NAME}*(?:{_FLAG_WORDS}){_NAME}*)(=|[ \t]+)(?!-)[^\s\"',]+"
        ),
        rf"\1\2{REDACTED}",
        (("-",), _SECRET_WORD_STEMS),
    ),
    # NAME=value, "name": "value", name: value, with a name naming a secret.
    (
        re.compile(
            rf"(?i)(\b{_NAME}*(?:{_WORDS}){_NAME}*[\"']?[ \t]*[:=][ \t]*[\"']?)"
            r"(?!\[redacted\])[^\s\"',;}&]+"
        ),
        rf"\1{REDACTED}",
        ((":", "="), _SECRET_WORD_STEMS),
    ),
    # SQL's quoted password (CREATE/ALTER ROLE … PASSWORD 'x', as pg_stat_activity and
    # pg_stat_statements show a session's statement), also when the text is cut short.
    (
        re.compile(r"(?i)(\bPASSWORD[ \t\r\n]+)'(?:[^']|'')*(?:'|\Z)"),
        rf"\1'{REDACTED}'",
        (("password",),),
    ),
    # This service's own tokens and webhook secrets.
    (
        re.compile(rf"\b(?:{TOKEN_PREFIX}|whsec)_[A-Za-z0-9_-]+"),
        REDACTED,
        ((f"{TOKEN_PREFIX.lower()}_", "whsec_"),),
    ),
]
_SECRET_FLAG = re.compile(rf"^--?{_NAME}*(?:{_FLAG_WORDS}){_NAME}*$", re.IGNORECASE)
_SECRET_FLAG_VALUE = re.compile(
    rf"^(--?{_NAME}*(?:{_FLAG_WORDS}){_NAME}*=).*$", re.IGNORECASE | re.S
)
_USERINFO = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://([^\s/?#@]*(?:@[^\s/?#@]*)*)@")
_HEADER_NAME = re.compile(rf"^(?:{_HEADERS})$", re.IGNORECASE)
# Header names that carry a credential without naming one of the words above:
# X-Auth-Key, X-Auth, Ocp-Apim-Subscription-Key, X-Functions-Key, X-License-Key…
_HEADER_WORDS = re.compile(r"auth|key", re.IGNORECASE)
_ENV_KEYS = frozenset({"env"})
_ARGV_KEYS = frozenset({"argv", "command"})
_HEADER_KEYS = frozenset({"headers"})


def redact_text(text: str) -> str:
    """``text`` with every secret-looking part replaced by :data:`REDACTED`."""
    if not text.isascii():
        for pattern, replacement, _ in _TEXT_RULES:
            text = pattern.sub(replacement, text)
        return text
    folded = text.lower()
    for pattern, replacement, guard in _TEXT_RULES:
        if all(any(literal in folded for literal in group) for group in guard):
            changed = pattern.sub(replacement, text)
            if changed != text:
                text, folded = changed, changed.lower()
    return text


def is_secret_header(name: str) -> bool:
    return bool(_HEADER_NAME.match(name) or SECRET_NAME.search(name) or _HEADER_WORDS.search(name))


def redact_argv(argv: Iterable[Any]) -> list[Any]:
    """An argv list with the values of secret-naming flags (and URL userinfo) hidden."""
    out: list[Any] = []
    hide_next = False
    for arg in argv:
        if not isinstance(arg, str):
            out.append(redact_value(arg))
            continue
        if hide_next and not arg.startswith("-"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = bool(_SECRET_FLAG.match(arg))
        match = _SECRET_FLAG_VALUE.match(arg)
        out.append(match.group(1) + REDACTED if match else redact_text(arg))
    return out


def redact_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {
        str(name): REDACTED if is_secret_header(str(name)) else redact_value(value)
        for name, value in headers.items()
    }


def redact_value(value: Any) -> Any:
    """A copy of ``value`` (JSON-like data) in which every secret is hidden: the form
    stored where every reader looks, and shown to every caller but admins."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if name in _ENV_KEYS and isinstance(item, Mapping):
                out[name] = dict.fromkeys((str(k) for k in item), REDACTED)
            elif name in _HEADER_KEYS and isinstance(item, Mapping):
                out[name] = redact_headers(item)
            elif name in _ARGV_KEYS and isinstance(item, list | tuple):
                out[name] = redact_argv(item)
            elif SECRET_NAME.search(name) and item not in (None, "", [], {}):
                out[name] = REDACTED
            else:
                out[name] = redact_value(item)
        return out
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def secrets_in(value: Any) -> set[str]:
    """The literal secret values ``value`` (a config, a step's parameters) carries: what
    output produced with it must not show (see :class:`Scrubber`)."""
    found: set[str] = set()
    _collect(value, found)
    return {s for s in found if len(s) >= MIN_KNOWN_SECRET}


def _collect(value: Any, found: set[str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            if name in _ENV_KEYS and isinstance(item, Mapping):
                found.update(str(v) for v in item.values() if isinstance(v, str))
                _collect(list(item.values()), found)
            elif name in _HEADER_KEYS and isinstance(item, Mapping):
                for header, text in item.items():
                    if is_secret_header(str(header)) and isinstance(text, str):
                        found.add(text)
                        found.update(text.split()[1:])  # "Bearer <credential>"
            elif name in _ARGV_KEYS and isinstance(item, list | tuple):
                _collect_argv(item, found)
            elif SECRET_NAME.search(name) and isinstance(item, str):
                found.add(item)
            else:
                _collect(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, found)
    elif isinstance(value, str):
        for userinfo in _USERINFO.findall(value):
            found.add(userinfo)
            found.update(part for part in userinfo.split(":", 1)[1:] if part)
        found.update(secret for secret in _SECRET_QUERY.findall(value) if secret)


def _collect_argv(argv: Iterable[Any], found: set[str]) -> None:
    take_next = False
    for arg in argv:
        if not isinstance(arg, str):
            continue
        if take_next and not arg.startswith("-"):
            found.add(arg)
        take_next = bool(_SECRET_FLAG.match(arg))
        match = _SECRET_FLAG_VALUE.match(arg)
        if match:
            found.add(arg[len(match.group(1)) :])
        _collect(arg, found)


class Scrubber:
    """Redacts text and data produced while using known secrets (:func:`secrets_in`):
    the rule of :func:`redact_text`, then every known value, longest first."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        values = sorted({k for k in known if len(k) >= MIN_KNOWN_SECRET}, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, values))) if values else None

    @classmethod
    def of(cls, *sources: Any) -> Scrubber:
        known: set[str] = set()
        for source in sources:
            known |= secrets_in(source)
        return cls(known)

    def text(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        return redact_text(text)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {str(k): self.value(v) for k, v in redact_value(dict(value)).items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value

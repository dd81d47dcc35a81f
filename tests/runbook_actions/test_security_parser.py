"""The log parser of ``security_log_scan`` (a pure function): what each kind of line
says, how lines sum up by source, and that no sample carries a secret."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from app.runbooks.actions.security import parse_line, sample, scan

NOW = dt.datetime(2026, 12, 3, 7, 0, tzinfo=dt.UTC)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# line, then what it says: failed_login, unauthorized (401), forbidden (403), matched by
# the runbook's grep, ip, user, time.
LINES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "nginx combined, a 401 on the login path",
        '203.0.113.7 - - [03/Dec/2026:06:01:02 +0000] "POST /api/auth/login HTTP/1.1" 401 61 '
        '"-" "curl/8.0"',
        {
            "failed_login": True,
            "unauthorized": True,
            "ip": "203.0.113.7",
            "time": at("2026-12-03T06:01:02"),
        },
    ),
    (
        "nginx combined, a 403 with a basic-auth user",
        '198.51.100.4 - alice [03/Dec/2026:06:01:03 +0000] "GET /admin HTTP/1.1" 403 12 "-" '
        '"Mozilla/5.0"',
        {"forbidden": True, "ip": "198.51.100.4", "user": "alice"},
    ),
    (
        "nginx combined, a 200 whose size has 401 in it",
        '198.51.100.5 - - [03/Dec/2026:06:01:03 +0000] "GET /report HTTP/1.1" 200 4013 "-" "-"',
        {"matched": False, "ip": "198.51.100.5"},
    ),
    (
        "common log format, a 401",
        '10.0.0.9 - bob [03/Dec/2026:06:01:04 +0000] "GET /v1/runs HTTP/1.1" 401 0',
        {"unauthorized": True, "ip": "10.0.0.9", "user": "bob"},
    ),
    (
        "combined, IPv6 client",
        '2001:db8::1 - - [03/Dec/2026:06:01:05 +0000] "POST /login HTTP/2.0" 401 0 "-" "-"',
        {"failed_login": True, "unauthorized": True, "ip": "2001:db8::1"},
    ),
    (
        "JSON, status and remote_addr",
        '{"time":"2026-12-03T06:02:00Z","level":"warn","msg":"request","status":401,'
        '"remote_addr":"192.0.2.10","path":"/v1/tokens","user":"carol"}',
        {
            "unauthorized": True,
            "ip": "192.0.2.10",
            "user": "carol",
            "time": at("2026-12-03T06:02:00"),
        },
    ),
    (
        "JSON, a login_failed event",
        '{"timestamp":"2026-12-03T06:02:01.123+00:00","event":"login_failed",'
        '"ip":"192.0.2.11","username":"dave"}',
        {
            "failed_login": True,
            "ip": "192.0.2.11",
            "user": "dave",
            "time": at("2026-12-03T06:02:01.123"),
        },
    ),
    (
        "JSON, the address and user only in the message",
        '{"level":"warning","message":"login failed for user gina from 192.0.2.14"}',
        {"failed_login": True, "ip": "192.0.2.14", "user": "gina"},
    ),
    (
        "JSON of pino, nested request and response, epoch milliseconds",
        '{"level":40,"time":1764741721000,"req":{"remoteAddress":"192.0.2.12",'
        '"url":"/api/login"},"res":{"statusCode":403},"msg":"request completed"}',
        {
            "failed_login": True,
            "forbidden": True,
            "ip": "192.0.2.12",
            "time": dt.datetime.fromtimestamp(1764741721, dt.UTC),
        },
    ),
    (
        "JSON, X-Forwarded-For style address with a port",
        '{"status":"403","client_ip":"192.0.2.13:51234, 10.0.0.1"}',
        {"forbidden": True, "ip": "192.0.2.13"},
    ),
    (
        "free text, login failed for a user from an address",
        "2026-12-03 06:03:00,123 WARNING auth: login failed for user erin from 203.0.113.50",
        {
            "failed_login": True,
            "ip": "203.0.113.50",
            "user": "erin",
            "time": at("2026-12-03T06:03:00.123"),
        },
    ),
    (
        "free text, sshd",
        "Dec  3 06:03:01 host sshd[123]: Failed password for invalid user admin from "
        "203.0.113.51 port 52234 ssh2",
        {
            "failed_login": True,
            "ip": "203.0.113.51",
            "user": "admin",
            "time": at("2026-12-03T06:03:01"),
        },
    ),
    (
        "docker compose logs prefix",
        "backend-1  | 2026-12-03T06:03:02Z Login failed: bad password from 203.0.113.52",
        {"failed_login": True, "ip": "203.0.113.52", "time": at("2026-12-03T06:03:02")},
    ),
    (
        "uvicorn access line",
        'INFO:     203.0.113.53:50712 - "GET /v1/runs HTTP/1.1" 401 Unauthorized',
        {"unauthorized": True, "ip": "203.0.113.53"},
    ),
    (
        "free text, unauthorized access",
        "WARN unauthorized access to /admin from 203.0.113.54",
        {"unauthorized": True, "ip": "203.0.113.54"},
    ),
    (
        "free text, HTTP status 403 without an address",
        "api call returned status=403 for report",
        {"forbidden": True},
    ),
    (
        "free text, a failure that is not about access",
        "ERROR backup failed: disk full",
        {"matched": True},
    ),
    (
        "free text, 401 as a number only",
        "INFO started in 401 ms",
        {"matched": True},
    ),
    ("nothing of interest", "INFO all good", {"matched": False}),
]


@pytest.mark.parametrize(("line", "expected"), [c[1:] for c in LINES], ids=[c[0] for c in LINES])
def test_a_line_says(line: str, expected: dict[str, Any]) -> None:
    parsed = parse_line(line, NOW)
    failure = any(expected.get(k) for k in ("failed_login", "unauthorized", "forbidden"))
    wanted = {
        "failed_login": False,
        "unauthorized": False,
        "forbidden": False,
        "matched": failure,
        "ip": None,
        "user": None,
        **expected,
    }
    got = {key: getattr(parsed, key) for key in wanted}
    assert got == wanted


SECRET_LINES = [
    (
        "SuperSecretValue123",
        '203.0.113.9 - - [03/Dec/2026:06:04:00 +0000] "GET /api/export?token=SuperSecretValue123'
        '&x=1 HTTP/1.1" 401 0 "-" "-"',
    ),
    (
        "abcdefghijklmnop123",
        '{"status":401,"ip":"203.0.113.9",'
        '"headers":{"Authorization":"Bearer abcdefghijklmnop123"}}',
    ),
    (
        "dXNlcjpwYXNzd29yZA",
        "login failed for user frank from 203.0.113.60 Authorization: Basic dXNlcjpwYXNzd29yZA",
    ),
    (
        "fops_abcd1234_secretsecret",
        "login failed with fops_abcd1234_secretsecret from 203.0.113.61",
    ),
    ("hunter2pass", "POST https://bob:hunter2pass@example.com/login failed from 203.0.113.62"),
    (
        "pa55w0rd-value",
        '{"event":"login failed","ip":"203.0.113.63","password":"pa55w0rd-value"}',
    ),
]


@pytest.mark.parametrize(("secret", "line"), SECRET_LINES, ids=[s for s, _ in SECRET_LINES])
def test_no_sample_carries_a_secret(secret: str, line: str) -> None:
    parsed = parse_line(line, NOW)
    assert parsed.failure, "the line still counts"
    report = scan([line], threshold=1)
    shown = json.dumps(report.as_data())
    assert secret not in shown
    assert "[redacted]" in shown
    assert secret not in sample(line)


def test_lines_sum_up_by_source_most_failures_first() -> None:
    attacker = "203.0.113.7"
    lines = [
        f'{attacker} - - [03/Dec/2026:06:01:0{i} +0000] "POST /login HTTP/1.1" 401 0 "-" "-"'
        for i in range(4)
    ]
    lines += [
        f'{attacker} - - [03/Dec/2026:06:01:09 +0000] "GET /admin HTTP/1.1" 403 0 "-" "-"',
        "login failed for user erin from 198.51.100.20",
        "login failed for user erin from 198.51.100.20",
        '{"event":"login failed","username":"mallory"}',
        "login failed, nobody said who or from where",
        "ERROR backup failed: disk full",
        '198.51.100.30 - - [03/Dec/2026:06:01:09 +0000] "GET / HTTP/1.1" 200 10 "-" "-"',
    ]
    report = scan(lines, threshold=3)
    data = report.as_data(top=2)
    assert data["lines_scanned"] == len(lines)
    assert data["lines_matched"] == 10
    assert (data["failed_logins"], data["unauthorized"], data["forbidden"]) == (8, 4, 1)
    assert data["unattributed"] == 1
    assert data["source_count"] == 3
    assert [s["source"] for s in data["top_sources"]] == [attacker, "198.51.100.20"]
    top = data["top_sources"][0]
    assert (top["failures"], top["failed_logins"], top["unauthorized"], top["forbidden"]) == (
        5,
        4,
        4,
        1,
    )
    assert top["first_seen"] == "2026-12-03T06:01:00+00:00"
    assert top["last_seen"] == "2026-12-03T06:01:09+00:00"
    assert len(top["sample_lines"]) == 3
    assert data["suspicious"] == [attacker]
    assert [s.source for s in report.ranked()][2] == "user mallory"
    assert len(data["sample_lines"]) == 10  # the runbook's tail -20 of grep's lines


def test_the_threshold_is_inclusive() -> None:
    lines = ["login failed for user erin from 198.51.100.20"] * 3
    assert scan(lines, threshold=3).suspicious()[0].failures == 3
    assert scan(lines, threshold=4).suspicious() == []


def test_lines_before_the_window_are_not_counted() -> None:
    lines = [
        '203.0.113.7 - - [03/Dec/2026:05:00:00 +0000] "POST /login HTTP/1.1" 401 0 "-" "-"',
        '203.0.113.7 - - [03/Dec/2026:06:30:00 +0000] "POST /login HTTP/1.1" 401 0 "-" "-"',
        "login failed for user erin from 198.51.100.20",  # no time: counted
    ]
    report = scan(lines, threshold=1, since=at("2026-12-03T06:00:00"))
    assert report.outside_window == 1
    assert report.lines_scanned == 2
    assert report.failed_logins == 2

"""Post-deployment verification against the thresholds: the error rate (and the p95
latency, where the source has it) of a service over its settle window, graded by
:func:`app.thresholds.service.grade`.

Where the numbers come from, in order:

* the environment's ``prometheus_url``: Prometheus's HTTP API, ``GET /api/v1/query``
  (an instant query) of the threshold's ``prometheus_query`` with ``$service``,
  ``$environment`` and ``$window`` replaced (names are validated, the window is a whole
  number of seconds: nothing else reaches the query);
* else the service's ``metrics_url``: its Prometheus text exposition scraped twice, at
  the start and the end of the window; the error rate is the share of
  ``http_requests_total`` with a 5xx ``status`` (or ``code``) label among all of them
  in between, the p95 latency comes from ``http_request_duration_seconds_bucket``;
* else nothing: "not measured".

URLs are shown with their userinfo and secret query parameters redacted; an HTTP error
is named by its type only (its text may repeat the URL).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from app.core.redaction import redact_text
from app.thresholds.models import Threshold
from app.thresholds.service import Grade, grade

if TYPE_CHECKING:
    import httpx

MAX_BODY_BYTES = 4 * 1024 * 1024
HTTP_TIMEOUT_SECONDS = 10.0
MIN_WINDOW_SECONDS = 1.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
REQUESTS = "http_requests_total"
BUCKETS = "http_request_duration_seconds_bucket"
MEASURED = ("error_rate", "latency_p95")

Source = Literal["prometheus", "metrics"]


class MeasureError(Exception):
    """The source could not be read; the message is safe to show."""


@dataclass
class Measurement:
    threshold: str
    unit: str
    value: float | None  # None: not measured (``detail`` says why)
    detail: str
    warning: float | None = None
    critical: float | None = None
    grade: Grade | None = None


@dataclass
class Verification:
    source: Source | None
    url: str | None  # redacted
    window_seconds: float
    measurements: list[Measurement] = field(default_factory=list)

    def breaches(self) -> list[Measurement]:
        return [m for m in self.measurements if m.grade == "critical"]

    def warnings(self) -> list[Measurement]:
        return [m for m in self.measurements if m.grade == "warning"]

    def as_data(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "url": self.url,
            "window_seconds": self.window_seconds,
            "measurements": [asdict(m) for m in self.measurements],
        }


def window_of(settle_seconds: float) -> float:
    """The measuring window: the service's settle time, at least a second, whole seconds
    (PromQL durations)."""
    return float(max(MIN_WINDOW_SECONDS, math.ceil(settle_seconds)))


def describe(m: Measurement) -> str:
    if m.value is None:
        return f"{m.threshold}: not measured ({m.detail})"
    unit = "%" if m.unit == "percent" else " ms" if m.unit == "milliseconds" else f" {m.unit}"
    levels = ", ".join(
        f"{name} > {level:g}{unit}"
        for name, level in (("warning", m.warning), ("critical", m.critical))
        if level is not None
    )
    return f"{m.threshold} {m.value:g}{unit} is {m.grade} ({levels or 'no levels'}; {m.detail})"


async def verify(
    http: httpx.AsyncClient,
    thresholds: Mapping[str, Threshold],
    *,
    environment: str,
    service: str,
    prometheus_url: str | None,
    metrics_url: str | None,
    window_seconds: float,
) -> Verification:
    """Measure and grade the error rate and p95 latency of the service."""
    if not _NAME.match(environment) or not _NAME.match(service):
        raise ValueError("environment and service names must be plain names")
    window = window_of(window_seconds)
    wanted = [thresholds[name] for name in MEASURED if name in thresholds]
    if prometheus_url:
        result = Verification("prometheus", redact_text(prometheus_url), window)
        for threshold in wanted:
            result.measurements.append(
                await _from_prometheus(
                    http, prometheus_url, threshold, environment, service, window
                )
            )
    elif metrics_url:
        result = Verification("metrics", redact_text(metrics_url), window)
        result.measurements = await _from_metrics(http, metrics_url, wanted, window)
    else:
        reason = "no metrics source is configured for this service"
        return Verification(
            None,
            None,
            window,
            [Measurement(t.name, t.unit, None, reason, t.warning, t.critical) for t in wanted],
        )
    for m in result.measurements:
        threshold = thresholds[m.threshold]
        if m.value is not None and not math.isfinite(m.value):
            # Never graded (NaN compares as "ok") nor stored (JSON has no NaN).
            m.detail = f"the measured value is not a finite number ({m.detail})"
            m.value = None
        if m.value is not None:
            m.grade = grade(threshold, m.value)
    return result


# -- Prometheus ------------------------------------------------------------------------


def promql(query: str, *, environment: str, service: str, window: float) -> str:
    return (
        query.replace("$service", service)
        .replace("$environment", environment)
        .replace("$window", f"{int(window)}s")
    )


async def _from_prometheus(
    http: httpx.AsyncClient,
    base_url: str,
    threshold: Threshold,
    environment: str,
    service: str,
    window: float,
) -> Measurement:
    m = Measurement(threshold.name, threshold.unit, None, "", threshold.warning, threshold.critical)
    if not threshold.prometheus_query:
        m.detail = "the threshold has no Prometheus query"
        return m
    query = promql(
        threshold.prometheus_query, environment=environment, service=service, window=window
    )
    url = base_url.rstrip("/") + "/api/v1/query"
    try:
        body = await _get(http, url, params={"query": query})
        value = _instant_value(body)
    except MeasureError as exc:
        m.detail = f"Prometheus at {redact_text(base_url)}: {exc}"
        return m
    if value is None:
        m.detail = f"Prometheus has no data for the query over {int(window)}s"
        return m
    m.value = round(value, 3)
    m.detail = f"Prometheus instant query over {int(window)}s"
    return m


def _instant_value(raw: bytes) -> float | None:
    """The value of an instant query's answer (the first series of a vector, or a
    scalar); None when it has none or it is not a number (0/0: no traffic)."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise MeasureError("the answer is not JSON") from exc
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        text = str(error)[:300] if error else "the query failed"
        raise MeasureError(redact_text(text))
    data = body.get("data")
    if not isinstance(data, dict):
        raise MeasureError("the answer has no data")
    result = data.get("result")
    pair: Any = None
    if data.get("resultType") == "vector" and isinstance(result, list):
        if not result:
            return None
        first = result[0]
        pair = first.get("value") if isinstance(first, dict) else None
    elif data.get("resultType") == "scalar":
        pair = result
    else:
        raise MeasureError(f"unexpected result type {str(data.get('resultType'))[:40]!r}")
    if not isinstance(pair, list) or len(pair) != 2:
        raise MeasureError("the answer's value is malformed")
    try:
        value = float(pair[1])
    except (TypeError, ValueError) as exc:
        raise MeasureError("the answer's value is not a number") from exc
    return value if math.isfinite(value) else None


# -- the service's own metrics -----------------------------------------------------------

Series = dict[tuple[tuple[str, str], ...], float]


async def _from_metrics(
    http: httpx.AsyncClient, url: str, wanted: list[Threshold], window: float
) -> list[Measurement]:
    def blank(t: Threshold, detail: str) -> Measurement:
        return Measurement(t.name, t.unit, None, detail, t.warning, t.critical)

    try:
        first = parse(await _get(http, url))
        await asyncio.sleep(window)
        second = parse(await _get(http, url))
    except MeasureError as exc:
        return [blank(t, f"metrics at {redact_text(url)}: {exc}") for t in wanted]
    how = f"two scrapes {window:g} s apart"
    out = []
    for t in wanted:
        if t.name == "error_rate":
            total, errors = _requests(first, second)
            if total <= 0:
                out.append(blank(t, f"no requests in the window ({how})"))
                continue
            m = blank(t, f"{errors:g} of {total:g} requests answered 5xx ({how})")
            m.value = round(100 * errors / total, 3)
        else:
            p95 = _p95_ms(first, second)
            if p95 is None:
                out.append(blank(t, f"no {BUCKETS} histogram or no requests ({how})"))
                continue
            m = blank(t, f"from {BUCKETS} ({how})")
            m.value = round(p95, 3)
        out.append(m)
    return out


def parse(raw: bytes) -> dict[str, Series]:
    """The samples of a Prometheus text exposition, by metric name, then by label set;
    a sample that is not a finite number (``NaN``, ``+Inf``) is left out."""
    out: dict[str, Series] = {}
    for line in raw.decode(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if not math.isfinite(value):
            continue  # NaN or ±Inf (the text format allows them): no count to add up
        labels = tuple(sorted(_LABEL.findall(match["labels"] or "")))
        out.setdefault(match["name"], {})[labels] = value
    return out


def _increase(first: Series, second: Series) -> Series:
    """What each counter grew by (a counter that went down was reset: it grew by its
    new value)."""
    out = {}
    for labels, value in second.items():
        before = first.get(labels, 0.0)
        out[labels] = value - before if value >= before else value
    return out


def _requests(first: dict[str, Series], second: dict[str, Series]) -> tuple[float, float]:
    grown = _increase(first.get(REQUESTS, {}), second.get(REQUESTS, {}))
    total = sum(grown.values())
    errors = 0.0
    for labels, value in grown.items():
        status = dict(labels).get("status") or dict(labels).get("code") or ""
        if status.startswith("5"):
            errors += value
    return total, errors


def _p95_ms(first: dict[str, Series], second: dict[str, Series]) -> float | None:
    """``histogram_quantile(0.95, …)`` of the increase of the duration buckets (summed
    over every other label), in milliseconds."""
    grown = _increase(first.get(BUCKETS, {}), second.get(BUCKETS, {}))
    by_bound: dict[float, float] = {}
    for labels, value in grown.items():
        le = dict(labels).get("le")
        if le is None:
            continue
        try:
            bound = float(le)
        except ValueError:
            continue
        by_bound[bound] = by_bound.get(bound, 0.0) + value
    if math.inf not in by_bound or by_bound[math.inf] <= 0:
        return None
    bounds = sorted(by_bound)
    rank = 0.95 * by_bound[math.inf]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = by_bound[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower * 1000  # as Prometheus: the highest finite bound
            if count == below:
                return bound * 1000
            return (lower + (bound - lower) * (rank - below) / (count - below)) * 1000
        lower, below = bound, count
    return None


# -- HTTP ------------------------------------------------------------------------------


async def _get(http: httpx.AsyncClient, url: str, params: Mapping[str, str] | None = None) -> bytes:
    """GET ``url`` (no redirects followed), at most :data:`MAX_BODY_BYTES` of it."""
    import httpx  # imported by ``http`` already; here for its errors

    if not url.lower().startswith(("http://", "https://")):
        raise MeasureError("only http and https URLs are read")
    try:
        async with http.stream(
            "GET",
            url,
            params=params,
            timeout=HTTP_TIMEOUT_SECONDS,
            follow_redirects=False,
            headers={"Accept": "application/json, text/plain;q=0.9"},
        ) as response:
            chunks = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise MeasureError(f"the answer is larger than {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise MeasureError(f"unreachable: {type(exc).__name__}") from None
    body = b"".join(chunks)
    if response.status_code != 200 and not (
        params is not None and response.status_code in (400, 422)  # PromQL error body
    ):
        raise MeasureError(f"status {response.status_code}")
    return body

"""The HTML status page as served: landmarks, headings, statuses in words, escaping, no
script, contrast of every colour it uses."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx

from app.core.context import AppContext
from app.status.page import BACKGROUND, COLOURS
from tests.status import data


class Outline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, text: str) -> None:
        if text.strip():
            self.text.append(text.strip())


def outline(html: str) -> Outline:
    parser = Outline()
    parser.feed(html)
    return parser


def luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_of_every_colour_is_at_least_4_5() -> None:
    assert contrast("#777777", BACKGROUND) < 4.5  # the check can fail
    colours = [COLOURS["text"], COLOURS["muted"], COLOURS["link"], *COLOURS["status"].values()]
    for colour in colours:
        assert contrast(colour, BACKGROUND) >= 4.5, colour


async def test_the_page_is_semantic_and_says_statuses_in_words(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    page = await data.seed_components(context)
    await data.open_incident(context, page, public_message="Errors <b>rising</b> & we are on it.")
    await data.maintenance(context, page)
    response = await client.get("/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    html = response.text
    parsed = outline(html)
    for landmark in ("header", "main", "footer"):
        assert parsed.tags.count(landmark) == 1, landmark
    assert parsed.tags.count("h1") == 1
    assert "script" not in parsed.tags
    assert re.search(r"<html lang=\"en\">", html)
    text = " ".join(parsed.text)
    assert "Partial System Outage" in text
    assert "Backend API" in text
    assert "Partial outage" in text
    assert "Database" in text
    assert "Under maintenance" in text
    assert "Frontend" in text
    assert "Operational" in text
    assert "Active incidents" in text
    assert "Elevated error rate on the Backend API" in text
    assert "Maintenance in progress" in text
    assert "Database upgrade to PostgreSQL 16" in text
    # A message is text, never markup.
    assert "Errors <b>rising</b> & we are on it." in text
    assert "<b>rising</b>" not in html
    for secret in (data.INTERNAL_UPDATE, data.COMMANDER, data.SECRET_COMPONENT):
        assert secret not in html


async def test_history_shows_resolved_incidents_of_the_last_90_days(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    import datetime as dt

    from app.core.db import utcnow

    page = await data.seed_components(context)
    await data.open_incident(
        context,
        page,
        title="Old outage",
        status="resolved",
        created_at=utcnow() - dt.timedelta(days=120),
    )
    await data.open_incident(
        context,
        page,
        title="Last week's outage",
        status="resolved",
        created_at=utcnow() - dt.timedelta(days=7),
    )
    text = " ".join(outline((await client.get("/status")).text).text)
    assert "All Systems Operational" in text
    assert "Last week's outage" in text
    assert "Old outage" not in text
    assert "No maintenance is scheduled." in text

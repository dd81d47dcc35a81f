"""A `database_url` the schema admits is one the URL parser reads (the environment's
database name is taken from it; backups parse it again)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.environments.schemas import DATABASE_URL, database_name


@given(url=st.from_regex(DATABASE_URL, fullmatch=True))
@settings(max_examples=300, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_admitted_url_is_parsed(url: str) -> None:
    urlsplit(url)
    database_name(url)


def test_brackets_outside_the_path_are_refused() -> None:
    """Found by the stateful schemathesis run: `]` in the userinfo passed the pattern and
    the parser refused the URL (a 422 for a request the schema allows)."""
    for url in (
        "postgresql://user]@0x/app",
        "postgresql://us[er@db/app",
        "postgresql://db]/app",
        "postgresql://[::1]:5432/app",
    ):
        assert re.search(DATABASE_URL, url) is None, url
    assert re.search(DATABASE_URL, "postgresql://u:p%5D@db:5432/app?x=[1]")

"""The README's receiver example, run as written against a real signed delivery."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.factories import IssuedToken
from tests.helpers import REPO_ROOT
from tests.webhooks.conftest import Receiver, create_webhook


def receiver_example() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("A receiver in Python")
    block = re.search(r"```python\n(.*?)```", readme[start:], re.DOTALL)
    assert block is not None
    return block.group(1)


async def test_the_readme_receiver_verifies_and_dedupes(
    client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver
) -> None:
    hook = await create_webhook(client, operator, url=receiver.url)
    response = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=operator.headers)
    assert response.status_code == 200, response.text
    (delivered,) = receiver.received
    namespace: dict[str, Any] = {}
    exec(receiver_example().replace('"whsec_..."', repr(hook["secret"])), namespace)  # noqa: S102
    receive = namespace["receive"]
    assert receive(delivered.body, delivered.headers) == 204
    assert receive(delivered.body, delivered.headers) == 200  # the same webhook-id again
    tampered = delivered.body.replace(b"webhook.test", b"webhook.tost")
    assert receive(tampered, delivered.headers) == 400

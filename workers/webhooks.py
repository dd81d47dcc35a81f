"""The delivery job: one batch of leased webhook deliveries (see app.webhooks.delivery)."""

from __future__ import annotations

from app.webhooks import delivery
from workers.state import WorkerState


async def deliver_webhooks(ctx: WorkerState, token: str) -> int:
    return await delivery.deliver_batch(ctx["context"], token)

"""Signed webhooks and notification channels: endpoints, the dispatcher that turns outbox
events into deliveries, the lean delivery job, the delivery log, and the SSRF guard."""

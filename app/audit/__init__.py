"""The tamper-evident audit trail: every state change and every denial, hash-chained."""

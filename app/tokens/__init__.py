"""API tokens: creation (secret shown once), listing, revocation, access review."""

"""The version prefix of the API."""

V1 = "/v1"

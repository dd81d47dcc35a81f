"""Authentication (bearer tokens) and authorisation (roles, environment restriction)."""

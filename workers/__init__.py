"""arq workers: thin job functions over ``app`` services."""

import app  # noqa: F401 - first: its deferred imports are in place before arq imports redis

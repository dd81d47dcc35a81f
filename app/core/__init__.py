"""Infrastructure shared by every domain: settings, database, queue, errors, HTTP
plumbing, logging and metrics. Nothing here imports a domain."""

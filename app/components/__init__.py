"""Components: the parts of the product readers of the status page know (Frontend,
Backend API, Database, Cache, File Storage), each with a status."""

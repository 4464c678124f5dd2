"""REST routers, one per resource, mounted under /api/v1."""

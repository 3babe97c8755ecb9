"""The HTTP adapter: FastAPI app, OAuth endpoints, the `/v1` API, error rendering."""

"""The HTTP server: FastAPI routes for the native, V2 and V1 protocols (the only place that
imports the web framework)."""

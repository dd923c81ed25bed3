"""The HTTP server: thin routes, one error renderer, the request-id middleware."""

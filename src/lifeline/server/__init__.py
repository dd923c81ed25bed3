"""The HTTP server: thin routes over one exchange (a model request's life), the wire encoders, one error
renderer per wire format, the middleware."""

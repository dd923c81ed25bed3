"""Providers: one module per wire format, each converting foreign errors at its boundary."""

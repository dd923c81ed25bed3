"""Thin routes: parse once, call the exchange (or a service), render."""

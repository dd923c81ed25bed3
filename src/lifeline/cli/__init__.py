"""Typer commands: serve, models, check, fakes."""

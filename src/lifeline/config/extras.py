"""The optional extras a config can call for, checked when the config is loaded (so that `lifeline check`
and `serve` say so at once): `tracing.enabled` needs the `otel` extra."""

from __future__ import annotations

import importlib.util

#: what `tracing.enabled` imports: the `otel` extra
OTEL_MODULES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
INSTALL_OTEL = "pip install -e '.[otel]' in a checkout, or pip install 'lifeline-gateway[otel]'"


def missing_otel() -> str | None:
    """None when the `otel` extra is installed; else a sentence saying what is missing and what to install
    (checked when a config turning tracing on is loaded, so that `check` and `serve` say so at once)."""
    for module in OTEL_MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # a parent package is missing
            found = False
        if not found:
            return f"tracing needs the otel extra, and {module} is not installed: {INSTALL_OTEL}"
    return None

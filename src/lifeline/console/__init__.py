"""The operator console: web pages at /ui served by the gateway itself (docs/console.md).

It reads the same services as the admin API (server/routes/admin.py, server/routes/control.py, the
gateway's health and accounting), never copies of its own; server-rendered Jinja2 templates with a little
vanilla JavaScript for live updates, and every asset ships in the package.
"""

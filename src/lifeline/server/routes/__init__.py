"""Thin routes: parse once, call the router, render."""

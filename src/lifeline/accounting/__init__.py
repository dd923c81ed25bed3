"""Accounting: virtual keys, budgets, rate limits, prices and the usage ledger."""

"""The OpenAI wire format as pydantic models, and helpers to parse and validate requests."""

"""The speech audit: what a candidate refuses, evades or steers, compared with mirrored controls."""

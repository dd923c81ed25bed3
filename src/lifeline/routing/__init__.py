"""Routing: the attempt loop, the failover policy, circuits and the streaming rules."""

"""Threadline: a self-hosted customer-messaging conversation engine."""

__version__ = "0.1.0"

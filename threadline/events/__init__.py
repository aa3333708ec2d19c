"""The event log and what is built on it: catch-up reads, realtime streams, webhooks."""

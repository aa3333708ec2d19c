"""Webhooks: endpoints per app, signed deliveries of the event log, retries, dead letters."""

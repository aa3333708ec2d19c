"""The one way out: the event log read as an outbox by a delivery worker (see worker.py)."""

"""Files attached to parts: limits, storage behind a small interface, lookup per app."""

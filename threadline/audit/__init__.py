"""The audit log: who created or removed tokens, admins and webhooks, changed roles,
re-owned tokens, and when."""

"""Apps (tenants) and what belongs to them directly: tokens, admins, channels, senders, users."""

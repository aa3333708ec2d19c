"""End users of an app: lookup by either id, creation on first contact, GDPR erasure."""

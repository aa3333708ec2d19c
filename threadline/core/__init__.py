"""The pure conversation rules: plain data in, plain data out, no I/O.

Every derived field of a conversation is computed here and nowhere else:
`rules.apply` for each event, `recompute.derive` from the parts alone.
"""

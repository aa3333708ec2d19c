"""The e-mail channel: messages received by SMTP or the `/ext/` inbound endpoint become
`incoming_email` conversations and their user replies (`inbound`), after a pure parse and
threading decision (`parse`)."""

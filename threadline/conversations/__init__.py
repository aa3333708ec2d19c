"""Conversations: storage of the state and parts, and the services that change them."""

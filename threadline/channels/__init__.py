"""Channels: the ways conversations arrive from and leave to outside Threadline.

Each channel parses and identifies what arrives (which app, user and conversation) and
hands it to the conversation service; nothing here writes conversation columns itself.
"""

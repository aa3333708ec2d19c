"""The operators' web inbox: the page at `/`, its static files, and signing in."""

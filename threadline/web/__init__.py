"""The HTTP server: the ASGI application and its lifespan."""

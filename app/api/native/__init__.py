"""The service's own API (``docs/api.md``): ``/v1/chats/...``, server-sent events."""

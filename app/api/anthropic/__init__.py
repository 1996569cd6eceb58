"""The Anthropic-compatible API under ``/v1``: Messages and its token count, for Claude Code."""

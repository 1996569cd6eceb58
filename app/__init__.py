"""Byte in Bottle: relays a local LLM token stream to people as server-sent events."""

from importlib.metadata import version

VERSION = version("byte-in-bottle")

"""OpenAI's Responses API, ``/v1/responses``, for Codex and the ``openai`` SDK: part of the
OpenAI-compatible surface (its errors are OpenAI's), in a folder of its own."""

"""The HTTP API: one folder per surface (``native``, ``openai``, ``ollama``), each with its routes,
its request mapping and its wire format, over the floor they share: the one answer pipeline,
the relay response, the docs and the playground."""

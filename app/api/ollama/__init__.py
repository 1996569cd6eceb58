"""The Ollama-compatible API at the root: ``/api/...`` as Ollama answers it."""

"""The OpenAI-compatible API under ``/v1``: Chat Completions, Completions, Embeddings, Models."""

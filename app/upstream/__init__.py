"""The engines behind the service: the Ollama client, routing over several hosts, GPU slots and
the fair queue."""

"""An Ollama simulator that speaks Ollama's HTTP API, for tests, benchmarks and ./scripts/dev."""

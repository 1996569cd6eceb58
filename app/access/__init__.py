"""Who is asking and what they may spend: trusted proxies and identity, API keys, quotas, and
the admission of each request."""

"""Models: the HTTP client for OpenAI-compatible endpoints, and the replay of a transcript."""

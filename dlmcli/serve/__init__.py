"""`dlm serve`: an OpenAI-compatible HTTP server over the step-wise scheduler (see docs/serve.md)."""

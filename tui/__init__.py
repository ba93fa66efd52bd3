"""The Textual triage app; reaches the store only through bot's API."""

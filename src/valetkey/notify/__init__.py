"""Telling humans: signed webhooks and email, through a durable outbox with retries."""

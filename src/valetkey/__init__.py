"""ValetKey: every AI agent gets its own keys."""

__version__ = "0.1.0"

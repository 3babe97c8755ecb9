"""SQLAlchemy (async) implementations of the core's store protocols, and migrations."""

"""Tenants, users, resources and agents: who may hold keys, and for what."""

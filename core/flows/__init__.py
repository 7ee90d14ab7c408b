"""Flows: declarative files under mappings/ that say which changes trigger which work."""

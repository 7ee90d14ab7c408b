"""Connector plugins. ``connectors.base`` is the seam between core and every platform."""

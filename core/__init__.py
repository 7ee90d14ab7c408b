"""Switchyard's platform: settings, storage, queue, worker, web edge and CLI.

``core`` never imports a concrete connector package; it finds connectors through
:mod:`connectors.registry`.
"""

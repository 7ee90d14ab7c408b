"""Tests of the ``webhook`` connector and its sandbox."""

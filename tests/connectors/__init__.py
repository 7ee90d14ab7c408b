"""Tests of the platform connectors, one package per connector."""

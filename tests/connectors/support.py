"""Test doubles and files the connector suites share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trustme

from connectors.salesforce.sandbox_tls import TlsFiles


class MemoryState:
    """A StateStore in memory: values and one lock per name, shared by the connectors of one
    test as the database store is shared by every worker."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str) -> dict[str, Any] | None:
        value = self.values.get(key)
        return dict(value) if value is not None else None

    async def put(self, key: str, value: Mapping[str, Any]) -> None:
        self.values[key] = dict(value)

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        async with self.locks.setdefault(name, asyncio.Lock()):
            yield


def trusted_tls(folder: Path) -> TlsFiles:
    """A throwaway CA (which the client under test trusts) and a certificate for 127.0.0.1."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(str(folder / "ca.pem"), str(folder / "cert.pem"), str(folder / "key.pem"))
    ca.cert_pem.write_to_path(files.ca_file)
    cert.cert_chain_pems[0].write_to_path(files.cert_file)
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(files.cert_file, append=True)
    cert.private_key_pem.write_to_path(files.key_file)
    return files

"""What every ``switchyard`` command shares: settings, the async runner, the services.

Every failure the user can fix prints one line saying what to do and exits with 2; nothing
prints a traceback for a known error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import typer
import uvloop

from core.errors import SwitchyardError
from core.settings import Settings, load_settings

T = TypeVar("T")


def fail(message: str) -> typer.Exit:
    """One line saying what to do, exit code 2 (raise the result)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def load() -> Settings:
    """Settings from the environment; an invalid setting → exit 2 with the fix."""
    try:
        return load_settings()
    except SwitchyardError as exc:
        raise fail(exc.detail) from None


def run(factory: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Run one async command with settings and logging set up; known errors → exit 2."""
    from core.logging import configure_logging

    loaded = load()
    configure_logging(loaded.log_level, loaded.log_format)
    try:
        # uvloop: the same asyncio API with a faster loop (socket writes were ~15% of a
        # webhook ack's CPU on the default loop).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(factory(loaded))
    except SwitchyardError as exc:
        raise fail(exc.detail) from None


async def with_services(settings: Settings, body: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """``body(services)`` on a migrated database, closing the services after."""
    from core.db.migrate import assert_migrated
    from core.services import build_services

    services = build_services(settings)
    try:
        await assert_migrated(services.engine)
        return await body(services)
    finally:
        await services.aclose()

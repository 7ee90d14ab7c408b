"""The package's public surface, and the SANDBOX demo that ``switchyard serve --demo``
starts: labelled as a sandbox, with config the factory accepts and credentials that work."""

from __future__ import annotations

import connectors.dynamics as package
from connectors.base import ConnectorContext, DemoCapable, DemoSandbox, RecordRef
from connectors.dynamics import DynamicsConnectorFactory


def test_the_package_exports_the_connector_and_its_factory() -> None:
    assert sorted(package.__all__) == ["DynamicsConnector", "DynamicsConnectorFactory"]
    assert isinstance(DynamicsConnectorFactory(), DemoCapable)


async def test_the_demo_sandbox_serves_a_working_environment() -> None:
    demo = await DynamicsConnectorFactory().start_demo_sandbox()
    try:
        assert isinstance(demo, DemoSandbox)
        assert "SANDBOX" in demo.label
        connector = DynamicsConnectorFactory().create(
            demo.config, demo.secrets, ConnectorContext("con_demo")
        )
        try:
            fields = {meta.name for meta in await connector.describe("incident")}
            assert "new_aitriagenote" in fields
            account = demo.environment.ids("account")[0]
            record = await connector.fetch(RecordRef("account", account), ["name"])
            assert record.fields["name"]
        finally:
            await connector.aclose()
    finally:
        await demo.aclose()

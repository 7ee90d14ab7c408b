"""The SANDBOX demo: it starts, is labelled as a sandbox, and its config and secrets make
a working connection whose flows validate against the sandbox's metadata."""

from __future__ import annotations

from pathlib import Path

from connectors.base import ConnectorContext, DemoSandbox, RecordRef
from connectors.sap import SapConnectorFactory
from connectors.sap.demo import SapDemo
from core.flows.catalog import FlowCatalog
from core.flows.validate import validate_flow

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"


async def test_the_demo_sandbox_serves_the_sample_flows() -> None:
    factory = SapConnectorFactory()
    demo = await factory.start_demo_sandbox()
    try:
        assert isinstance(demo, DemoSandbox)
        assert isinstance(demo, SapDemo)
        assert "SANDBOX" in demo.label
        connector = factory.create(demo.config, demo.secrets, ConnectorContext("con_demo"))
        catalog = FlowCatalog.load(MAPPINGS)
        for name in ("sap/sales_order_draft", "sap/invoice_anomaly"):
            entry = catalog.get(name)
            assert entry is not None
            assert entry.spec is not None
            source = entry.spec.source.object
            target = (entry.spec.writeback.object if entry.spec.writeback else None) or source
            check = validate_flow(
                Path(entry.path),
                catalog.prompts,
                metadata={source: await connector.describe(source)},
                target_metadata={target: await connector.describe(target)},
                target_kind=connector.kind,
            )
            assert check.errors == [], [str(p) for p in check.errors]
        email = await connector.fetch(RecordRef("CustomerEmail", "0000000001"))
        assert email.fields["sold_to_party"]
        await connector.aclose()
    finally:
        await demo.aclose()

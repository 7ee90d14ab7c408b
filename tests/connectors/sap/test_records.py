"""Reading and writing SAP records over OData against the SANDBOX: fetch, describe from
``$metadata``, ETag conflicts, CSRF expiry, idempotent creates and ``$batch``."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.base import Patch, RecordRef, WriteResult, WriteStatus
from connectors.sap.errors import CsrfRequired
from connectors.sap.sandbox import SapSandbox
from core.errors import ConnectorError, ConnectorTerminalError
from tests.connectors.sap.conftest import MakeConnector

ORDER = "0000000001"


async def test_fetch_reads_plain_values_and_the_etag(
    make_connector: MakeConnector, system: SapSandbox
) -> None:
    record = await make_connector().fetch(RecordRef("A_SalesOrder", ORDER))
    assert record.fields["SoldToParty"] == "0010100001"
    assert record.fields["RequestedDeliveryDate"] == "2026-03-16"  # /Date(ms)/ → ISO
    assert record.fields["LastChangeDateTime"].endswith("Z")
    assert record.version is not None
    assert record.version.startswith('W/"datetimeoffset')
    email = await make_connector().fetch(RecordRef("CustomerEmail", "0000000001"))
    assert email.fields["sold_to_party"] == "0010100001"
    assert "RB-100" in email.fields["body"]


async def test_fetching_a_missing_record_is_terminal(make_connector: MakeConnector) -> None:
    with pytest.raises(ConnectorTerminalError, match="no A_SalesOrder 0000009999") as caught:
        await make_connector().fetch(RecordRef("A_SalesOrder", "0000009999"))
    assert caught.value.extensions["status_code"] == 404


async def test_describe_comes_from_metadata(make_connector: MakeConnector) -> None:
    fields = {f.name: f for f in await make_connector().describe("A_SalesOrder")}
    assert fields["PurchaseOrderByCustomer"].type == "Edm.String"
    assert fields["RequestedDeliveryDate"].type == "Edm.DateTime"
    assert fields["SalesOrderType"].updateable  # creatable, though not updatable
    assert not fields["SalesOrder"].updateable
    assert not fields["LastChangeDateTime"].updateable
    assert not fields["TotalNetAmount"].updateable
    assert fields["to_Item.MaterialByCustomer"].updateable  # the deep-insert navigation
    assert not fields["to_Item.NetAmount"].updateable
    invoice = {f.name for f in await make_connector().describe("A_SupplierInvoice")}
    assert {"SupplierInvoiceIDByInvcgParty", "PaymentBlockingReason", "YY1_AnomalyNote"} <= invoice


async def test_an_update_sends_the_etag_and_a_changed_record_is_a_conflict(
    make_connector: MakeConnector, system: SapSandbox
) -> None:
    connector = make_connector()
    read = await connector.fetch(RecordRef("A_SalesOrder", ORDER))
    system.change("A_SalesOrder", ORDER, {"DeliveryBlockReason": "02"})  # a person, meanwhile
    result = await connector.write(
        Patch("A_SalesOrder", ORDER, {"DeliveryBlockReason": "01"}, read.version), "job-1"
    )
    assert result.status is WriteStatus.CONFLICT
    assert (system.record("A_SalesOrder", ORDER) or {})["DeliveryBlockReason"] == "02"

    fresh = await connector.fetch(RecordRef("A_SalesOrder", ORDER))
    written = await connector.write(
        Patch("A_SalesOrder", ORDER, {"DeliveryBlockReason": "01"}, fresh.version), "job-2"
    )
    assert written.status is WriteStatus.WRITTEN
    assert written.version != fresh.version
    assert (system.record("A_SalesOrder", ORDER) or {})["LastChangedByUser"] == "SWITCHYARD"
    # The same job again (its first write went through): nothing is sent.
    again = await connector.write(
        Patch("A_SalesOrder", ORDER, {"DeliveryBlockReason": "01"}, fresh.version), "job-2"
    )
    assert again.detail == "already applied"
    assert len([w for w in system.services.writes if w[0] == "PATCH"]) == 1


async def test_read_only_fields_are_refused_before_sending(
    make_connector: MakeConnector, system: SapSandbox
) -> None:
    with pytest.raises(ConnectorTerminalError, match="SoldToParty: not updatable"):
        await make_connector().write(
            Patch("A_SalesOrder", ORDER, {"SoldToParty": "0010100002"}), "job-1"
        )
    assert system.services.writes == []


async def test_an_expired_csrf_token_is_fetched_again_once(
    make_connector: MakeConnector, system: SapSandbox
) -> None:
    connector = make_connector()
    await connector.write(Patch("A_SalesOrder", ORDER, {"DeliveryBlockReason": "01"}), "j1")
    assert system.csrf_fetches == 1
    await connector.write(Patch("A_SalesOrder", ORDER, {"DeliveryBlockReason": "02"}), "j2")
    assert system.csrf_fetches == 1  # the token is kept while it is valid
    system.expire_csrf()
    await connector.write(Patch("A_SalesOrder", ORDER, {"DeliveryBlockReason": "03"}), "j3")
    assert (system.csrf_refusals, system.csrf_fetches) == (1, 2)
    assert (system.record("A_SalesOrder", ORDER) or {})["DeliveryBlockReason"] == "03"


async def test_a_token_refused_twice_is_not_retried_again(
    make_connector: MakeConnector, system: SapSandbox
) -> None:
    system.csrf_seconds = 0  # every token is stale by the time it is used
    with pytest.raises(CsrfRequired, match="403"):
        await make_connector().write(
            Patch("A_SalesOrder", ORDER, {"DeliveryBlockReason": "01"}), "j1"
        )
    assert (system.csrf_fetches, system.csrf_refusals) == (2, 2)
    assert system.services.writes == []


async def test_a_create_is_a_deep_insert_and_a_retried_job_creates_nothing_more(
    make_connector: MakeConnector, system: SapSandbox
) -> None:
    patch = Patch(
        "A_SalesOrder",
        None,
        {
            "SalesOrderType": "OR",
            "SalesOrganization": "1010",
            "SoldToParty": "0010100001",
            "PurchaseOrderByCustomer": "4711-A",
            "RequestedDeliveryDate": "2026-04-03",
            "to_Item.MaterialByCustomer": ["RB-100", "HT-1000"],
            "to_Item.RequestedQuantity": [20, 5],
            "to_Item.RequestedQuantityUnit": ["PC", ""],
        },
    )
    before = len(system.rows("A_SalesOrder"))
    first = await make_connector().write(patch, "job-77")
    assert first.detail == f"success SBX/311: A_SalesOrderType {first.record_id} created"
    retried = await make_connector().write(patch, "job-77")  # a new worker, the same job
    assert retried.record_id == first.record_id
    assert retried.detail == "already created"
    assert len(system.rows("A_SalesOrder")) == before + 1
    created = system.record("A_SalesOrder", first.record_id) or {}
    assert created["PurchaseOrderByCustomer"] == "4711-A"
    assert str(created["YY1_SwitchyardRef_SDH"]).startswith("SY-")
    items = [r for r in system.rows("A_SalesOrderItem") if r["SalesOrder"] == first.record_id]
    assert [(i["MaterialByCustomer"], i["RequestedQuantity"]) for i in items] == [
        ("RB-100", "20"),
        ("HT-1000", "5"),
    ]
    assert "RequestedQuantityUnit" not in items[1]  # an empty unit is left to SAP
    other = await make_connector().write(patch, "job-78")
    assert other.record_id != first.record_id


async def test_a_create_refuses_to_overwrite_its_reference_field(
    make_connector: MakeConnector,
) -> None:
    connector = make_connector(create_reference={"A_SalesOrder": "PurchaseOrderByCustomer"})
    patch = Patch(
        "A_SalesOrder", None, {"SoldToParty": "0010100001", "PurchaseOrderByCustomer": "X"}
    )
    with pytest.raises(ConnectorTerminalError, match="create reference"):
        await connector.write(patch, "job-1")
    plain = Patch("A_SalesOrder", None, {"SalesOrderType": "OR", "SoldToParty": "0010100001"})
    result = await connector.write(plain, "job-2")
    again = await connector.write(plain, "job-2")
    assert again.record_id == result.record_id


async def test_sap_business_errors_are_terminal_and_readable(
    make_connector: MakeConnector,
) -> None:
    with pytest.raises(ConnectorTerminalError, match="V1/212: Enter a sold-to party"):
        await make_connector().write(Patch("A_SalesOrder", None, {"SalesOrderType": "OR"}), "j")


async def test_batch_updates_answer_per_record(
    make_connector: MakeConnector, system: SapSandbox
) -> None:
    connector = make_connector()
    stale = (await connector.fetch(RecordRef("A_SalesOrder", "0000000002"))).version
    system.change("A_SalesOrder", "0000000002", {"DeliveryBlockReason": "09"})
    results = await connector.write_many(
        [
            Patch("A_SalesOrder", "0000000001", {"DeliveryBlockReason": "01"}),
            Patch("A_SalesOrder", "0000000002", {"DeliveryBlockReason": "01"}, stale),
            Patch("A_SalesOrder", "0000000003", {"PurchaseOrderByCustomer": "X" * 36}),
            Patch("A_SalesOrder", "0000009999", {"DeliveryBlockReason": "01"}),
            Patch("A_SalesOrder", "0000000003", {"TotalNetAmount": "1"}),
        ]
    )
    ok, conflict, failed, missing, refused = results
    assert isinstance(missing, ConnectorError)
    assert missing.extensions["status_code"] == 404  # its ETag could not be read: not written
    assert isinstance(refused, ConnectorError)
    assert "not updatable" in refused.detail  # refused before sending
    assert isinstance(ok, WriteResult)
    assert ok.status is WriteStatus.WRITTEN
    assert isinstance(conflict, WriteResult)
    assert conflict.status is WriteStatus.CONFLICT
    assert isinstance(failed, ConnectorError)
    assert "longer than 35" in failed.detail
    assert (system.record("A_SalesOrder", "0000000001") or {})["DeliveryBlockReason"] == "01"
    assert (system.record("A_SalesOrder", "0000000002") or {})["DeliveryBlockReason"] == "09"
    assert (system.record("A_SalesOrder", "0000000003") or {})[
        "PurchaseOrderByCustomer"
    ] != "X" * 36
    assert [m for m, p in system.requests if p.endswith("$batch")] == ["POST", "POST"]


async def test_a_412_from_sap_is_a_conflict_and_nothing_is_overwritten(
    make_connector: MakeConnector, system: SapSandbox
) -> None:
    connector = make_connector()
    assert connector.odata is not None
    records = connector.odata
    stale = (await connector.fetch(RecordRef("A_SalesOrder", ORDER))).version
    read = records.read

    async def read_then_someone_changes_it(*args: Any, **kwargs: Any) -> Any:
        found = await read(*args, **kwargs)
        system.change("A_SalesOrder", ORDER, {"DeliveryBlockReason": "07"})
        return found

    records.read = read_then_someone_changes_it  # type: ignore[method-assign]
    result = await connector.write(
        Patch("A_SalesOrder", ORDER, {"DeliveryBlockReason": "01"}, stale), "job-1"
    )
    assert result.status is WriteStatus.CONFLICT
    assert "412" in result.detail
    assert (system.record("A_SalesOrder", ORDER) or {})["DeliveryBlockReason"] == "07"

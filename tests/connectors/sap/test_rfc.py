"""Sales orders over RFC/BAPI, against a test double of ``pyrfc.Connection`` that keeps
SAP's unit of work: nothing is visible before BAPI_TRANSACTION_COMMIT, and a rollback or a
closed connection loses the work."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from connectors.base import ConnectorContext, Patch, RecordRef, WriteStatus
from connectors.sap import SapConnector, SapConnectorFactory
from connectors.sap.errors import BapiError, RfcUnavailable, SapUnauthorized
from connectors.sap.rfc import pyrfc_connection
from connectors.sap.sandbox_rfc import ABAPApplicationError, CommunicationError, FakeSapSystem
from core.errors import ConnectorTerminalError, ConnectorTransientError
from tests.connectors.sap.conftest import PASSWORD, USER, WEBHOOK_SECRET, rfc_config

ORDER = {
    "SalesOrderType": "TA",
    "SalesOrganization": "1010",
    "DistributionChannel": "10",
    "OrganizationDivision": "00",
    "SoldToParty": "10100001",
    "RequestedDeliveryDate": "2026-04-03",
    "to_Item.Material": ["TG11", "TG12"],
    "to_Item.RequestedQuantity": [20, 5],
    "to_Item.RequestedQuantityUnit": ["PC", "PC"],
}


def _connector(erp: FakeSapSystem, **secrets: Any) -> SapConnector:
    return SapConnectorFactory(rfc_connect=erp.connect).create(
        rfc_config(),
        {"user": USER, "password": PASSWORD, "webhook_secret": WEBHOOK_SECRET} | secrets,
        ConnectorContext("con_rfc"),
    )


async def test_a_sales_order_is_created_and_committed(erp: FakeSapSystem) -> None:
    connector = _connector(erp)
    result = await connector.write(Patch("A_SalesOrder", None, ORDER), "job-1")
    assert result.status is WriteStatus.WRITTEN
    assert result.record_id in erp.orders
    assert "W V1/555" not in result.detail  # a delivery date was given
    assert "S V1/311" in result.detail  # success messages are kept
    order = erp.orders[result.record_id]
    assert order["header"]["PURCH_NO_C"].startswith("SY-")
    assert order["header"]["REQ_DATE_H"] == "20260403"
    assert order["partners"] == [{"PARTN_ROLE": "AG", "PARTN_NUMB": "0010100001"}]
    assert [i["ITM_NUMBER"] for i in order["items"]] == ["000010", "000020"]
    assert order["items"][0]["MATERIAL"] == "TG11"
    assert erp.calls[-2:] == ["BAPI_SALESORDER_CREATEFROMDAT2", "BAPI_TRANSACTION_COMMIT"]
    fetched = await connector.fetch(RecordRef("A_SalesOrder", result.record_id))
    assert fetched.fields["SoldToParty"] == "0010100001"
    assert fetched.fields["RequestedDeliveryDate"] == "2026-04-03"
    await connector.aclose()


async def test_error_messages_roll_back_and_name_the_messages(erp: FakeSapSystem) -> None:
    connector = _connector(erp)
    bad = ORDER | {"SoldToParty": "0099999999"}
    with pytest.raises(BapiError, match="E V1/212: Sold-to party 0099999999 does not exist"):
        await connector.write(Patch("A_SalesOrder", None, bad), "job-1")
    assert erp.orders == {}
    assert erp.calls[-1] == "BAPI_TRANSACTION_ROLLBACK"
    assert "BAPI_TRANSACTION_COMMIT" not in erp.calls
    await connector.aclose()


async def test_warnings_are_recorded(erp: FakeSapSystem) -> None:
    connector = _connector(erp)
    no_date = {k: v for k, v in ORDER.items() if k != "RequestedDeliveryDate"}
    result = await connector.write(Patch("A_SalesOrder", None, no_date), "job-1")
    assert "W V1/555: Requested delivery date was set to today" in result.detail
    await connector.aclose()


async def test_a_lost_answer_after_the_commit_does_not_create_twice(erp: FakeSapSystem) -> None:
    connector = _connector(erp)
    erp.fail_next(CommunicationError(), function="BAPI_TRANSACTION_COMMIT", after=True)
    with pytest.raises(ConnectorTransientError, match="partner not reached"):
        await connector.write(Patch("A_SalesOrder", None, ORDER), "job-9")
    assert len(erp.orders) == 1  # the commit went through; its answer did not
    retried = await connector.write(Patch("A_SalesOrder", None, ORDER), "job-9")
    assert retried.detail == "already created"
    assert list(erp.orders) == [retried.record_id]
    await connector.aclose()


async def test_a_broken_connection_loses_the_uncommitted_order(erp: FakeSapSystem) -> None:
    connector = _connector(erp)
    erp.fail_next(CommunicationError(), function="BAPI_TRANSACTION_COMMIT")
    with pytest.raises(ConnectorTransientError):
        await connector.write(Patch("A_SalesOrder", None, ORDER), "job-3")
    assert erp.orders == {}  # closed without commit: the work is gone
    retried = await connector.write(Patch("A_SalesOrder", None, ORDER), "job-3")
    assert retried.detail != "already created"
    assert list(erp.orders) == [retried.record_id]
    await connector.aclose()


async def test_connections_are_pooled(erp: FakeSapSystem) -> None:
    connector = _connector(erp)
    for n in range(3):
        await connector.write(Patch("A_SalesOrder", None, ORDER), f"job-{n}")
    assert erp.opened == 1
    assert len(erp.orders) == 3
    await connector.aclose()


async def test_logon_and_abap_errors_are_terminal(erp: FakeSapSystem) -> None:
    refused = _connector(erp, password="wrong")
    with pytest.raises(SapUnauthorized, match="RFC_LOGON_FAILURE"):
        await refused.write(Patch("A_SalesOrder", None, ORDER), "job-1")
    connector = _connector(erp)
    erp.fail_next(ABAPApplicationError("Function not found", "FU_NOT_FOUND"))
    with pytest.raises(ConnectorTerminalError, match="FU_NOT_FOUND"):
        await connector.fetch(RecordRef("A_SalesOrder", "1"))
    await connector.aclose()


async def test_only_sales_orders_and_creates_over_rfc(erp: FakeSapSystem) -> None:
    connector = _connector(erp)
    with pytest.raises(ConnectorTerminalError, match="A_SalesOrder only"):
        await connector.fetch(RecordRef("A_BusinessPartner", "1"))
    with pytest.raises(ConnectorTerminalError, match="not PurchaseOrderByCustomer"):
        await connector.write(Patch("A_SalesOrder", "1", {"PurchaseOrderByCustomer": "x"}), "j")
    with pytest.raises(ConnectorTerminalError, match="cannot check a record's version"):
        await connector.write(Patch("A_SalesOrder", "1", {"DeliveryBlockReason": "01"}, "v1"), "j")
    with pytest.raises(NotImplementedError):
        await connector.poll(None)
    names = {f.name for f in await connector.describe("A_SalesOrder")}
    assert {"SoldToParty", "to_Item.MaterialByCustomer"} <= names
    await connector.aclose()


@pytest.mark.skipif(importlib.util.find_spec("pyrfc") is not None, reason="pyrfc is installed")
async def test_without_pyrfc_the_error_says_how_to_install() -> None:
    with pytest.raises(RfcUnavailable, match=r"pip install 'switchyard\[sap-rfc\]'") as caught:
        pyrfc_connection()
    assert "SAPNWRFC_HOME" in caught.value.detail
    connector = SapConnectorFactory().create(
        rfc_config(),
        {"user": USER, "password": PASSWORD, "webhook_secret": WEBHOOK_SECRET},
        ConnectorContext("con_rfc"),
    )
    with pytest.raises(RfcUnavailable):
        await connector.write(Patch("A_SalesOrder", None, ORDER), "job-1")
    await connector.aclose()


async def test_header_changes_are_committed_once(erp: FakeSapSystem) -> None:
    connector = _connector(erp)
    created = await connector.write(Patch("A_SalesOrder", None, ORDER), "job-1")
    change = Patch("A_SalesOrder", created.record_id, {"DeliveryBlockReason": "01"})
    changed = await connector.write(change, "job-2")
    assert "S V1/311" in changed.detail
    assert erp.orders[created.record_id]["header"]["DLV_BLOCK"] == "01"
    assert erp.calls[-2:] == ["BAPI_SALESORDER_CHANGE", "BAPI_TRANSACTION_COMMIT"]
    again = await connector.write(change, "job-2")  # the retried job: nothing is sent
    assert again.detail == "already applied"
    assert erp.calls.count("BAPI_SALESORDER_CHANGE") == 1
    missing = Patch("A_SalesOrder", "0000000042", {"DeliveryBlockReason": "01"})
    with pytest.raises(ConnectorTerminalError, match="no sales order"):
        await connector.write(missing, "job-3")
    await connector.aclose()

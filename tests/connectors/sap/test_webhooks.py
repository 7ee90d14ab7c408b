"""Event Mesh deliveries: the shared secret and CloudEvents parsing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from connectors.base import ChangeType, InboundRequest
from connectors.sap import SapConnector
from connectors.sap.webhooks import SECRET_HEADER
from core.errors import PayloadMalformed, SignatureInvalid
from tests.connectors.sap.conftest import WEBHOOK_SECRET, MakeConnector

EVENT = {
    "specversion": "1.0",
    "type": "sap.s4.beh.salesorder.v1.SalesOrder.Changed.v1",
    "source": "/default/sap.s4/SBXCLNT100",
    "id": "d5a2b3c4-0000-4000-8000-000000000001",
    "time": "2026-03-02T09:00:00Z",
    "datacontenttype": "application/json",
    "data": {"SalesOrder": "0000000001"},
}


def _request(body: Any, **headers: str) -> InboundRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return InboundRequest(
        "POST", "http://switchyard.test/hooks/con", {k.lower(): v for k, v in headers.items()}, raw
    )


@pytest.fixture
def connector(make_connector: MakeConnector) -> SapConnector:
    return make_connector()


def test_the_shared_secret_is_required(connector: SapConnector) -> None:
    connector.verify(_request(EVENT, **{SECRET_HEADER: WEBHOOK_SECRET}))
    basic = base64.b64encode(f"eventmesh:{WEBHOOK_SECRET}".encode()).decode()
    connector.verify(_request(EVENT, Authorization=f"Basic {basic}"))
    with pytest.raises(SignatureInvalid, match="does not match"):
        connector.verify(_request(EVENT, **{SECRET_HEADER: WEBHOOK_SECRET + "x"}))
    with pytest.raises(SignatureInvalid, match="no X-Switchyard-Secret"):
        connector.verify(_request(EVENT))
    wrong = base64.b64encode(b"eventmesh:guess").decode()
    with pytest.raises(SignatureInvalid):
        connector.verify(_request(EVENT, Authorization=f"Basic {wrong}"))


def test_structured_and_batched_cloudevents(connector: SapConnector) -> None:
    created = EVENT | {
        "id": "e2",
        "type": "sap.s4.beh.salesorder.v1.SalesOrder.Created.v1",
        "data": {"SalesOrder": "0000000002"},
    }
    unknown = EVENT | {"id": "e3", "type": "sap.s4.beh.product.v1.Product.Changed.v1"}
    events = connector.parse(_request([EVENT, created, unknown]))
    assert [(e.record_id, e.change_type) for e in events] == [
        ("0000000001", ChangeType.UPDATED),
        ("0000000002", ChangeType.CREATED),
    ]
    assert events[0].platform_event_id == EVENT["id"]
    assert events[0].object == "A_SalesOrder"


def test_binary_mode_and_compound_keys(connector: SapConnector) -> None:
    request = _request(
        {"SupplierInvoice": "5105600001", "FiscalYear": "2026"},
        **{
            "ce-id": "b1",
            "ce-type": "sap.s4.beh.supplierinvoice.v1.SupplierInvoice.Created.v1",
            "ce-source": "/default/sap.s4/SBXCLNT100",
            "ce-specversion": "1.0",
        },
    )
    (event,) = connector.parse(request)
    assert (event.object, event.record_id) == ("A_SupplierInvoice", "5105600001/2026")


def test_our_own_changes_start_nothing(connector: SapConnector) -> None:
    own = EVENT | {"id": "o1", "sapuser": "SWITCHYARD"}
    by_data = EVENT | {"id": "o2", "data": {"SalesOrder": "1", "LastChangedByUser": "switchyard"}}
    other = EVENT | {"id": "o3", "sapuser": "CB9980000001"}
    assert [e.platform_event_id for e in connector.parse(_request([own, by_data, other]))] == ["o3"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not JSON"),
        ([], "array of them"),
        ([{"type": EVENT["type"]}], "string id"),
        ([EVENT | {"data": {}}], "data.SalesOrder is missing"),
    ],
)
def test_malformed_bodies(connector: SapConnector, body: Any, problem: str) -> None:
    with pytest.raises(PayloadMalformed, match=problem):
        connector.parse(_request(body))

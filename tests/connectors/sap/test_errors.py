"""SAP's error answers and PyRFC's exceptions become typed errors (transient or terminal)."""

from __future__ import annotations

import pytest

from connectors.base import Patch, RecordRef
from connectors.sap.errors import (
    CsrfRequired,
    PreconditionFailed,
    SapUnauthorized,
    from_response,
    translate_rfc,
)
from connectors.sap.sandbox import SapSandbox
from connectors.sap.sandbox_rfc import (
    ABAPApplicationError,
    ABAPRuntimeError,
    CommunicationError,
    LogonError,
)
from core.errors import ConnectorTerminalError, ConnectorTransientError, is_transient
from tests.connectors.sap.conftest import MakeConnector

CAPTURED = {  # the shape of a real S/4HANA error answer
    "error": {
        "code": "SD_SLS_ORD/045",
        "message": {"lang": "en", "value": "Sales order 4711 is locked by user MILLER"},
        "innererror": {
            "application": {"component_id": "SD-SLS", "service_id": "API_SALES_ORDER_SRV"},
            "transactionid": "6E3C1F",
            "errordetails": [
                {
                    "code": "V1/042",
                    "message": "Sales document 4711 is currently being processed",
                    "propertyref": "",
                    "severity": "error",
                    "target": "SalesOrder",
                }
            ],
        },
    }
}


def test_an_sap_error_body_becomes_a_clear_terminal_error() -> None:
    error = from_response("update A_SalesOrder 4711", 400, CAPTURED, {})
    assert isinstance(error, ConnectorTerminalError)
    assert "SD_SLS_ORD/045: Sales order 4711 is locked by user MILLER" in error.detail
    assert "V1/042 Sales document 4711 is currently being processed [SalesOrder]" in error.detail
    assert error.extensions["sap_code"] == "SD_SLS_ORD/045"


@pytest.mark.parametrize("status", [429, 503, 502, 504, 500])
def test_throttling_and_outages_are_transient(status: int) -> None:
    error = from_response("read", status, b"<html>busy</html>", {"retry-after": "7"})
    assert isinstance(error, ConnectorTransientError)
    assert is_transient(error)
    if status in (429, 503):
        assert error.retry_after == 7.0


def test_special_statuses() -> None:
    assert isinstance(from_response("w", 401, b"", {}), SapUnauthorized)
    assert isinstance(from_response("w", 403, b"", {"x-csrf-token": "Required"}), CsrfRequired)
    assert not isinstance(from_response("w", 403, b"", {}), CsrfRequired)
    assert isinstance(from_response("w", 412, CAPTURED, {}), PreconditionFailed)
    assert isinstance(from_response("w", 428, b"", {}), PreconditionFailed)


async def test_the_sandbox_throttles_and_the_connector_says_transient(
    make_connector: MakeConnector, system: SapSandbox
) -> None:
    connector = make_connector()
    system.inject(429, retry_after="3")
    with pytest.raises(ConnectorTransientError) as caught:
        await connector.fetch(RecordRef("A_SalesOrder", "0000000001"))
    assert caught.value.retry_after == 3.0
    system.inject(503)
    with pytest.raises(ConnectorTransientError):
        await connector.write(
            Patch("A_SalesOrder", "0000000001", {"DeliveryBlockReason": "01"}), "j"
        )
    record = await connector.fetch(RecordRef("A_SalesOrder", "0000000001"))
    assert record.fields["SalesOrder"] == "0000000001"


@pytest.mark.parametrize(
    ("raised", "transient", "name"),
    [
        (CommunicationError(), True, "CommunicationError"),
        (LogonError(), False, "LogonError"),
        (ABAPApplicationError("Function module not found", "FU_NOT_FOUND"), False, "ABAP"),
        (ABAPRuntimeError("short dump"), False, "ABAP runtime"),
    ],
)
def test_pyrfc_errors_are_translated(raised: Exception, transient: bool, name: str) -> None:
    with (
        pytest.raises((ConnectorTransientError, ConnectorTerminalError)) as caught,
        translate_rfc("call BAPI_X"),
    ):
        raise raised
    assert is_transient(caught.value) is transient
    assert caught.value.__cause__ is raised
    assert "call BAPI_X" in caught.value.detail
    if isinstance(raised, LogonError):
        assert isinstance(caught.value, SapUnauthorized)


def test_other_exceptions_pass_through_rfc_translation() -> None:
    with pytest.raises(KeyError), translate_rfc("call"):
        raise KeyError("x")

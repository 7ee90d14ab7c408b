"""Sales orders over RFC/BAPI through PyRFC, with a small pool of connections.

``pyrfc`` needs SAP's proprietary NW RFC SDK, so it is imported only when an RFC
connection is first opened (:func:`pyrfc_connection`); without it the error says how to
install it. Tests pass their own ``connect`` (a stand-in for ``pyrfc.Connection``).

The transport speaks the same object and field names as OData (``A_SalesOrder``,
``SoldToParty``, ``to_Item.Material``, ...), mapped to BAPI parameters here, so a flow
does not care which transport a connection uses. [community: the BAPI field names follow
SAP community documentation of BAPI_SALESORDER_CREATEFROMDAT2 / BAPISDITM.]

A create: the client reference (``PURCH_NO_C``) is looked up with
``BAPI_SALESORDER_GETLIST`` [uncertain parameter names] and an order holding it is
answered as is; otherwise ``BAPI_SALESORDER_CREATEFROMDAT2`` runs and its ``RETURN`` is
read: any ``E``/``A`` row → ``BAPI_TRANSACTION_ROLLBACK`` on the same connection and a
:class:`~connectors.sap.errors.BapiError` naming the messages; else
``BAPI_TRANSACTION_COMMIT`` with ``WAIT = "X"`` (its RETURN is checked too). ``S``/``W``/``I``
rows are kept in the result's detail. Updates of a few header fields go through
``BAPI_SALESORDER_CHANGE`` the same way. Only ``CommunicationError`` is retried (by the
queue); the connection that raised it is dropped from the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from connectors.base import FieldMeta, Patch, Record, RecordRef, WriteResult, WriteStatus
from connectors.sap.errors import (
    INSTALL_HINT,
    RfcUnavailable,
    bapi_failure,
    translate_rfc,
)
from connectors.sap.reference import client_reference
from connectors.sap.wire import parse_date
from core.errors import ConnectorTerminalError

Connect = Callable[..., Any]  # pyrfc.Connection(**params)
FAILED = {"E", "A"}
HEADER = {  # A_SalesOrder field → ORDER_HEADER_IN field
    "SalesOrderType": "DOC_TYPE",
    "SalesOrganization": "SALES_ORG",
    "DistributionChannel": "DISTR_CHAN",
    "OrganizationDivision": "DIVISION",
    "PurchaseOrderByCustomer": "PURCH_NO_C",
    "RequestedDeliveryDate": "REQ_DATE_H",
}
ITEM = {  # to_Item.<field> → ORDER_ITEMS_IN field
    "Material": "MATERIAL",
    "MaterialByCustomer": "CUST_MAT35",
    "RequestedQuantity": "TARGET_QTY",
    "RequestedQuantityUnit": "TARGET_QU",
    "Plant": "PLANT",
}
CHANGEABLE = {  # A_SalesOrder field → BAPI_SALESORDER_CHANGE ORDER_HEADER_IN field
    "RequestedDeliveryDate": "REQ_DATE_H",
    "DeliveryBlockReason": "DLV_BLOCK",
    "HeaderBillingBlockReason": "BILL_BLOCK",
}
SALES_ORDER = "A_SalesOrder"


def pyrfc_connection() -> Connect:
    try:
        module = importlib.import_module("pyrfc")
    except ImportError as exc:
        raise RfcUnavailable(INSTALL_HINT) from exc
    connect: Connect = module.Connection
    return connect


def alpha(value: Any, width: int) -> str:
    """SAP's ALPHA conversion: digits padded with leading zeros, anything else as is."""
    text = str(value or "").strip()
    return text.zfill(width) if text.isdigit() else text


def _dats(value: Any) -> str:
    moment = parse_date(value)
    if moment is None:
        raise ConnectorTerminalError(f"not a date: {str(value)[:40]!r}")
    return moment.strftime("%Y%m%d")


def _iso_date(dats: str) -> str | None:
    return f"{dats[:4]}-{dats[4:6]}-{dats[6:8]}" if len(dats) == 8 and dats != "00000000" else None


class RfcPool:
    """At most ``size`` open connections, reused; one is held for a whole BAPI + commit."""

    def __init__(self, connect: Callable[[], Any], size: int) -> None:
        self._connect = connect
        self._idle: list[Any] = []
        self._slots = asyncio.Semaphore(size)
        self.opened = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                with translate_rfc("open an RFC connection"):
                    conn = await asyncio.to_thread(self._connect)
                self.opened += 1
            healthy = False
            try:
                yield conn
                healthy = True
            finally:
                if healthy:
                    self._idle.append(conn)
                else:  # the session may hold uncommitted work or be broken: close it
                    await asyncio.to_thread(_close, conn)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await asyncio.to_thread(_close, conn)


def _close(conn: Any) -> None:
    # Closing a broken connection may fail; it is gone either way.
    with contextlib.suppress(Exception):
        conn.close()


class RfcRecords:
    def __init__(self, pool: RfcPool, *, reference_field: str | None, timeout: int) -> None:
        self._pool = pool
        self._reference_field = reference_field
        self._options = {"timeout": timeout}

    async def _call(self, conn: Any, function: str, **params: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with translate_rfc(f"call {function}"):
                return dict(conn.call(function, options=self._options, **params))

        return await asyncio.to_thread(run)

    def _supported(self, object_name: str) -> None:
        if object_name != SALES_ORDER:
            raise ConnectorTerminalError(
                f"the RFC transport handles {SALES_ORDER} only, not {object_name}; use a "
                "connection with transport odata"
            )

    async def describe(self, object_name: str) -> list[FieldMeta]:
        self._supported(object_name)
        fields = [
            FieldMeta(name, "Edm.DateTime" if bapi == "REQ_DATE_H" else "Edm.String")
            for name, bapi in (HEADER | CHANGEABLE).items()
        ]
        fields += [FieldMeta("SoldToParty", "Edm.String", required=True)]
        fields += [FieldMeta(f"to_Item.{name}", "list of Edm.String") for name in ITEM]
        fields += [FieldMeta("SalesOrder", "Edm.String", updateable=False)]
        return fields

    async def fetch(self, ref: RecordRef, fields: Sequence[str] | None = None) -> Record:
        self._supported(ref.object)
        async with self._pool.connection() as conn:
            answer = await self._call(
                conn,
                "BAPISDORDER_GETDETAILEDLIST",
                I_BAPI_VIEW={"HEADER": "X", "ITEM": "X", "PARTNER": "X"},
                SALES_DOCUMENTS=[{"VBELN": alpha(ref.record_id, 10)}],
            )
        headers = answer.get("ORDER_HEADERS_OUT") or []
        if not headers:
            raise ConnectorTerminalError(f"SAP has no sales order {ref.record_id}", status_code=404)
        head = headers[0]
        values: dict[str, Any] = {"SalesOrder": head.get("DOC_NUMBER")}
        for name, bapi in (HEADER | CHANGEABLE).items():
            value = head.get(bapi)
            values[name] = _iso_date(str(value or "")) if bapi == "REQ_DATE_H" else value
        sold_to = [p for p in answer.get("ORDER_PARTNERS_OUT") or [] if p.get("PARTN_ROLE") == "AG"]
        values["SoldToParty"] = sold_to[0].get("CUSTOMER") if sold_to else None
        items = answer.get("ORDER_ITEMS_OUT") or []
        for name, bapi in ITEM.items():
            values[f"to_Item.{name}"] = [item.get(bapi) for item in items]
        if fields:
            values = {k: v for k, v in values.items() if k in fields}
        return Record(ref.object, ref.record_id, values, None)

    async def update(self, patch: Patch) -> WriteResult:
        """``BAPI_SALESORDER_CHANGE`` of header fields (``UPDATEFLAG`` U + the X flags).

        RFC has no ETag: a change made since the proposal cannot be detected, so a patch
        that names an ``expected_version`` is refused rather than written blind.
        """
        self._supported(patch.object)
        assert patch.record_id is not None
        if patch.expected_version is not None:
            raise ConnectorTerminalError("RFC cannot check a record's version; use transport odata")
        unknown = sorted(set(patch.fields) - set(CHANGEABLE))
        if unknown:
            raise ConnectorTerminalError(
                f"over RFC only {', '.join(CHANGEABLE)} can be changed, not {', '.join(unknown)}"
            )
        current = await self.fetch(RecordRef(patch.object, patch.record_id))
        if all(current.fields.get(k) == v for k, v in patch.fields.items()):
            return WriteResult(WriteStatus.WRITTEN, patch.record_id, None, "already applied")
        header: dict[str, Any] = {}
        for name, value in patch.fields.items():
            bapi = CHANGEABLE[name]
            header[bapi] = _dats(value) if bapi == "REQ_DATE_H" and value else (value or "")
        flags = {"UPDATEFLAG": "U"} | dict.fromkeys(header, "X")
        async with self._pool.connection() as conn:
            answer = await self._call(
                conn,
                "BAPI_SALESORDER_CHANGE",
                SALESDOCUMENT=alpha(patch.record_id, 10),
                ORDER_HEADER_IN=header,
                ORDER_HEADER_INX=flags,
            )
            messages = list(answer.get("RETURN") or [])
            await self._finish(conn, "BAPI_SALESORDER_CHANGE", messages)
        return WriteResult(WriteStatus.WRITTEN, patch.record_id, None, _notes(messages))

    async def _finish(self, conn: Any, function: str, messages: list[Any]) -> None:
        """Roll back on any E/A message (and raise); else commit with WAIT = X."""
        if any(m.get("TYPE") in FAILED for m in messages):
            await self._call(conn, "BAPI_TRANSACTION_ROLLBACK")
            raise bapi_failure(function, _failed_first(messages))
        commit = await self._call(conn, "BAPI_TRANSACTION_COMMIT", WAIT="X")
        committed = commit.get("RETURN") or {}
        rows = committed if isinstance(committed, list) else [committed]
        if any(r.get("TYPE") in FAILED for r in rows):
            raise bapi_failure("BAPI_TRANSACTION_COMMIT", rows)

    async def create(self, patch: Patch, idempotency_key: str) -> WriteResult:
        self._supported(patch.object)
        if self._reference_field is None:
            raise ConnectorTerminalError(
                f"creating {SALES_ORDER} needs config.create_reference.{SALES_ORDER}"
            )
        if self._reference_field != "PurchaseOrderByCustomer":
            raise ConnectorTerminalError("over RFC the create reference is PURCH_NO_C only")
        if patch.fields.get("PurchaseOrderByCustomer") not in (None, ""):
            raise ConnectorTerminalError(
                "PurchaseOrderByCustomer (PURCH_NO_C) carries Switchyard's create reference "
                "over RFC; the patch must not set it"
            )
        reference = client_reference(idempotency_key)
        header, partners, items, schedules = self._order(patch.fields, reference)
        async with self._pool.connection() as conn:
            existing = await self._find(conn, reference, header, partners)
            if existing:
                return WriteResult(WriteStatus.WRITTEN, existing, None, "already created")
            answer = await self._call(
                conn,
                "BAPI_SALESORDER_CREATEFROMDAT2",
                ORDER_HEADER_IN=header,
                ORDER_PARTNERS=partners,
                ORDER_ITEMS_IN=items,
                ORDER_SCHEDULES_IN=schedules,
            )
            messages = list(answer.get("RETURN") or [])
            document = str(answer.get("SALESDOCUMENT") or "")
            if not document and not any(m.get("TYPE") in FAILED for m in messages):
                messages.append(_NO_DOCUMENT)
            await self._finish(conn, "BAPI_SALESORDER_CREATEFROMDAT2", messages)
        return WriteResult(WriteStatus.WRITTEN, document, None, _notes(messages))

    def _order(
        self, fields: Mapping[str, Any], reference: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        unknown = [
            f
            for f in fields
            if f not in HEADER
            and f != "SoldToParty"
            and not (f.startswith("to_Item.") and f[8:] in ITEM)
        ]
        if unknown:
            raise ConnectorTerminalError(
                f"no BAPI field for {', '.join(sorted(unknown))} on the RFC transport"
            )
        header = {HEADER[k]: v for k, v in fields.items() if k in HEADER and v not in (None, "")}
        if "REQ_DATE_H" in header:
            header["REQ_DATE_H"] = _dats(header["REQ_DATE_H"])
        header["PURCH_NO_C"] = reference
        sold_to = fields.get("SoldToParty")
        if not sold_to:
            raise ConnectorTerminalError("a sales order needs SoldToParty (partner role AG)")
        partners = [{"PARTN_ROLE": "AG", "PARTN_NUMB": alpha(sold_to, 10)}]
        columns = {k[8:]: list(v or []) for k, v in fields.items() if k.startswith("to_Item.")}
        count = max((len(v) for v in columns.values()), default=0)
        if any(len(v) != count for v in columns.values()):
            raise ConnectorTerminalError("the to_Item.* lists differ in length")
        items, schedules = [], []
        for index in range(count):
            number = f"{(index + 1) * 10:06d}"
            item = {"ITM_NUMBER": number}
            for name, values in columns.items():
                if values[index] not in (None, ""):
                    item[ITEM[name]] = values[index]
            if "MATERIAL" in item:
                item["MATERIAL"] = alpha(item["MATERIAL"], 18)
            items.append(item)
            if "TARGET_QTY" in item:
                schedule = {"ITM_NUMBER": number, "REQ_QTY": item["TARGET_QTY"]}
                if "REQ_DATE_H" in header:
                    schedule["REQ_DATE"] = header["REQ_DATE_H"]
                schedules.append(schedule)
        return header, partners, items, schedules

    async def _find(
        self, conn: Any, reference: str, header: Mapping[str, Any], partners: Sequence[Any]
    ) -> str | None:
        answer = await self._call(
            conn,
            "BAPI_SALESORDER_GETLIST",
            CUSTOMER_NUMBER=partners[0]["PARTN_NUMB"],
            SALES_ORGANIZATION=header.get("SALES_ORG", ""),
            PURCHASE_ORDER_NUMBER=reference,
        )
        for row in answer.get("SALES_ORDERS") or []:
            if row.get("PURCH_NO") == reference and row.get("SD_DOC"):
                return str(row["SD_DOC"])
        return None

    async def aclose(self) -> None:
        await self._pool.aclose()


_NO_DOCUMENT = {"TYPE": "E", "ID": "", "NUMBER": "", "MESSAGE": "no sales document was created"}


def _failed_first(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [m for m in messages if m.get("TYPE") in FAILED]


def _notes(messages: Sequence[Mapping[str, Any]]) -> str:
    """Success, warning and info messages, kept with the result."""
    notes = [
        f"{m.get('TYPE')} {m.get('ID')}/{m.get('NUMBER')}: {m.get('MESSAGE')}"
        for m in messages
        if m.get("TYPE") in ("S", "W", "I")
    ]
    return "; ".join(notes)[:1000]

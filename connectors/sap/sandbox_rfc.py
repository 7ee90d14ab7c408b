"""SANDBOX — a test double of ``pyrfc.Connection`` backed by a tiny SAP system.

:class:`FakeSapSystem` holds committed sales orders; :meth:`FakeSapSystem.connect` is a
drop-in for ``pyrfc.Connection(**params)`` (pass it as the connector's ``rfc_connect``).
Each :class:`FakeConnection` is one RFC session with its own logical unit of work: a
``BAPI_SALESORDER_CREATEFROMDAT2`` buffers the order, ``BAPI_TRANSACTION_COMMIT`` makes it
visible to every session, ``BAPI_TRANSACTION_ROLLBACK`` or ``close()`` discards it — as
SAP does. Business errors come back in ``RETURN`` (BAPIRET2 rows), not as exceptions;
unknown function modules raise ``ABAPApplicationError`` (``FU_NOT_FOUND``), a wrong
password ``LogonError``; :meth:`FakeSapSystem.fail_next` makes the next call raise any of
PyRFC's errors (e.g. a ``CommunicationError`` after the commit went through).
The exception classes mirror ``pyrfc._exception`` (names, attributes, ``str`` format).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class RFCError(Exception):
    pass


class RFCLibError(RFCError):
    def __init__(self, message: str, code: int, key: str, msg_type: str = "", msg_v1: str = ""):
        super().__init__(message)
        self.message, self.code, self.key = message, code, key
        self.msg_class, self.msg_type, self.msg_number = "", msg_type, ""
        self.msg_v1 = msg_v1

    def __str__(self) -> str:
        return f"{self.key} (rc={self.code}): key={self.key}, message={self.message}"


class CommunicationError(RFCLibError):
    def __init__(
        self, message: str = "partner not reached", key: str = "RFC_COMMUNICATION_FAILURE"
    ):
        super().__init__(message, 1, key)


class LogonError(RFCLibError):
    def __init__(self, message: str = "Name or password is incorrect (repeat logon)"):
        super().__init__(message, 2, "RFC_LOGON_FAILURE")


class ABAPRuntimeError(RFCLibError):
    def __init__(self, message: str, key: str = "RFC_ABAP_RUNTIME_FAILURE"):
        super().__init__(message, 3, key)


class ABAPApplicationError(RFCLibError):
    def __init__(self, message: str, key: str):
        super().__init__(message, 5, key)


def bapiret2(kind: str, msg_id: str, number: str, message: str, **extra: str) -> dict[str, Any]:
    row = {
        "TYPE": kind,
        "ID": msg_id,
        "NUMBER": number,
        "MESSAGE": message,
        "LOG_NO": "",
        "LOG_MSG_NO": "000000",
        "MESSAGE_V1": "",
        "MESSAGE_V2": "",
        "MESSAGE_V3": "",
        "MESSAGE_V4": "",
        "PARAMETER": "",
        "ROW": 0,
        "FIELD": "",
        "SYSTEM": "SBXCLNT100",
    }
    return row | extra


@dataclass
class FakeSapSystem:
    """Committed state of the SANDBOX system, shared by every connection."""

    user: str = "SWITCHYARD"
    password: str = "sandbox-password"  # noqa: S105 (a sandbox default)
    client: str = "100"
    customers: set[str] = field(default_factory=lambda: {"0010100001", "0010100002"})
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    opened: int = 0
    _numbers: Any = field(default_factory=lambda: itertools.count(1))
    _faults: deque[tuple[str | None, Exception, bool]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self, **params: Any) -> FakeConnection:
        if params.get("user") != self.user or params.get("passwd") != self.password:
            raise LogonError()
        if params.get("client") != self.client:
            raise LogonError("Client does not exist")
        self.opened += 1
        return FakeConnection(self)

    def fail_next(
        self, exc: Exception, *, function: str | None = None, after: bool = False
    ) -> None:
        """The next call (of ``function``, if given) raises ``exc``; ``after``: it runs
        first, then the error arrives (the answer was lost on the way back)."""
        self._faults.append((function, exc, after))

    def next_number(self) -> str:
        return str(next(self._numbers) + 9_000_000).zfill(10)

    def _fault(self, function: str) -> tuple[Exception, bool] | None:
        for index, (name, exc, after) in enumerate(self._faults):
            if name in (None, function):
                del self._faults[index]
                return exc, after
        return None


class FakeConnection:
    def __init__(self, system: FakeSapSystem) -> None:
        self._system = system
        self._buffer: dict[str, dict[str, Any]] = {}  # this session's uncommitted work
        self.alive = True

    def close(self) -> None:
        self._buffer.clear()  # closing without commit discards the work
        self.alive = False

    def ping(self) -> None:
        if not self.alive:
            raise CommunicationError("connection closed")

    def call(
        self, function: str, options: Mapping[str, Any] | None = None, **params: Any
    ) -> dict[str, Any]:
        if not self.alive:
            raise CommunicationError("connection closed")
        system = self._system
        with system._lock:
            system.calls.append(function)
            fault = system._fault(function)
            if fault is not None and not fault[1]:
                raise fault[0]
            handler = getattr(self, "_" + function.lower(), None)
            if handler is None:
                raise ABAPApplicationError(f"ID:FL Type:E Number:046 {function}", "FU_NOT_FOUND")
            answer: dict[str, Any] = handler(**params)
            if fault is not None:
                raise fault[0]
            return answer

    # ------------------------------------------------------------ function modules

    def _bapi_salesorder_createfromdat2(self, **params: Any) -> dict[str, Any]:
        header = dict(params.get("ORDER_HEADER_IN") or {})
        partners = list(params.get("ORDER_PARTNERS") or [])
        items = list(params.get("ORDER_ITEMS_IN") or [])
        errors = []
        sold_to = next((p.get("PARTN_NUMB") for p in partners if p.get("PARTN_ROLE") == "AG"), None)
        if not header.get("DOC_TYPE"):
            errors.append(
                bapiret2(
                    "E", "V1", "384", "Sales document type is missing", PARAMETER="SALES_HEADER_IN"
                )
            )
        if sold_to is None or sold_to not in self._system.customers:
            errors.append(
                bapiret2(
                    "E",
                    "V1",
                    "212",
                    f"Sold-to party {sold_to or ''} does not exist",
                    PARAMETER="SALES_PARTNERS",
                )
            )
        if not items:
            errors.append(
                bapiret2("E", "V1", "761", "No item data entered", PARAMETER="SALES_ITEMS_IN")
            )
        if errors:
            return {
                "SALESDOCUMENT": "",
                "RETURN": [*errors, bapiret2("E", "V4", "219", "Sales document was not changed")],
            }
        number = self._system.next_number()
        self._buffer[number] = {"header": header, "partners": partners, "items": items}
        messages = [bapiret2("S", "V4", "233", "SALES_HEADER_IN has been processed successfully")]
        if not header.get("REQ_DATE_H"):
            messages.append(bapiret2("W", "V1", "555", "Requested delivery date was set to today"))
        messages.append(
            bapiret2("S", "V1", "311", f"Standard Order {number} has been saved", MESSAGE_V2=number)
        )
        return {"SALESDOCUMENT": number, "RETURN": messages}

    def _bapi_transaction_commit(self, **params: Any) -> dict[str, Any]:
        self._system.orders.update(self._buffer)
        self._buffer.clear()
        return {"RETURN": bapiret2("S", "", "000", "") | {"TYPE": ""}}

    def _bapi_transaction_rollback(self, **params: Any) -> dict[str, Any]:
        self._buffer.clear()
        return {"RETURN": bapiret2("S", "", "000", "") | {"TYPE": ""}}

    def _bapi_salesorder_getlist(self, **params: Any) -> dict[str, Any]:
        wanted = params.get("PURCHASE_ORDER_NUMBER")
        customer = params.get("CUSTOMER_NUMBER")
        rows = [
            {
                "SD_DOC": number,
                "PURCH_NO": order["header"].get("PURCH_NO_C"),
                "SOLD_TO": customer,
                "DOC_TYPE": order["header"].get("DOC_TYPE"),
            }
            for number, order in self._system.orders.items()
            if order["header"].get("PURCH_NO_C") == wanted
            and any(p.get("PARTN_NUMB") == customer for p in order["partners"])
        ]
        return {"SALES_ORDERS": rows, "RETURN": bapiret2("S", "", "000", "")}

    def _bapi_salesorder_change(self, **params: Any) -> dict[str, Any]:
        number = str(params.get("SALESDOCUMENT") or "")
        order = self._buffer.get(number) or self._system.orders.get(number)
        if order is None:
            return {
                "RETURN": [
                    bapiret2("E", "V1", "302", f"Sales document {number} is not in the database")
                ]
            }
        flags = dict(params.get("ORDER_HEADER_INX") or {})
        if flags.get("UPDATEFLAG") != "U":
            return {
                "RETURN": [bapiret2("E", "V1", "045", "Enter UPDATEFLAG U in ORDER_HEADER_INX")]
            }
        changed = {
            "header": dict(order["header"]),
            "partners": order["partners"],
            "items": order["items"],
        }
        for name, value in dict(params.get("ORDER_HEADER_IN") or {}).items():
            if flags.get(name) == "X":
                changed["header"][name] = value
        self._buffer[number] = changed
        return {"RETURN": [bapiret2("S", "V1", "311", f"Standard Order {number} has been saved")]}

    def _bapisdorder_getdetailedlist(self, **params: Any) -> dict[str, Any]:
        numbers = [d.get("VBELN") for d in params.get("SALES_DOCUMENTS") or []]
        headers, partners, items = [], [], []
        for number in numbers:
            order = self._system.orders.get(str(number))
            if order is None:
                continue
            headers.append({"DOC_NUMBER": number, **order["header"]})
            partners += [
                {"SD_DOC": number, "PARTN_ROLE": p["PARTN_ROLE"], "CUSTOMER": p["PARTN_NUMB"]}
                for p in order["partners"]
            ]
            items += [{"DOC_NUMBER": number, **item} for item in order["items"]]
        return {
            "ORDER_HEADERS_OUT": headers,
            "ORDER_PARTNERS_OUT": partners,
            "ORDER_ITEMS_OUT": items,
        }

    def _stfc_connection(self, **params: Any) -> dict[str, Any]:
        text = str(params.get("REQUTEXT", ""))
        return {"ECHOTEXT": text, "RESPTEXT": "SAP R/3 Rel. 758 Sysid: SBX Client: 100"}

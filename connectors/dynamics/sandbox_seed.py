"""SANDBOX — the rows a fresh Dataverse sandbox holds: a few customer accounts with their
size, credit and pipeline, and open cases against them, all made by a human user."""

from __future__ import annotations

from datetime import datetime, timedelta

from connectors.dynamics.sandbox_schema import TABLES
from connectors.dynamics.sandbox_store import Store

ACCOUNTS = [
    {
        "name": "Kestrel Precision Parts AG",
        "accountnumber": "ACC-10041",
        "description": "Supplier of machined parts for two of our plants since 2019. Renewed "
        "for three years in January; planning a second line in Graz next spring. Reference "
        "customer for the automotive segment.",
        "revenue": 48_000_000.0,
        "numberofemployees": 310,
        "creditonhold": False,
        "creditlimit": 250_000.0,
        "opendeals": 3,
        "openrevenue": 185_000.0,
        "industrycode": 12,
    },
    {
        "name": "Harbourline Wholesale Ltd",
        "accountnumber": "ACC-10077",
        "description": "Two invoices from Q2 disputed and unpaid; the purchasing lead who "
        "sponsored us left in May. They asked for a competitor comparison.",
        "revenue": 12_500_000.0,
        "numberofemployees": 95,
        "creditonhold": True,
        "creditlimit": 40_000.0,
        "opendeals": 0,
        "openrevenue": 0.0,
        "industrycode": 33,
    },
    {
        "name": "Aster & Lind Consulting",
        "accountnumber": "ACC-10102",
        "description": "",
        "revenue": 3_200_000.0,
        "numberofemployees": 28,
        "creditonhold": False,
        "creditlimit": 15_000.0,
        "opendeals": 1,
        "openrevenue": 12_000.0,
        "industrycode": 7,
    },
]

CASES = [
    {
        "title": "Invoice 2024-1187 charged twice",
        "description": "Hello, our card was charged twice for invoice 2024-1187 last Friday. "
        "Please refund the duplicate payment. Regards, accounts payable",
        "prioritycode": 2,
        "casetypecode": 3,
    },
    {
        "title": "Production line scanner integration down",
        "description": "Since this morning's update the scanner integration rejects every "
        "label with error E-4410. Both shifts are stopped, about 60 people affected.",
        "prioritycode": 2,
        "casetypecode": 2,
    },
    {
        "title": "How do I add a delivery address?",
        "description": "Where in the portal can we add a second delivery address?",
        "prioritycode": 1,
        "casetypecode": 1,
    },
]


def seed(store: Store, now: datetime, user: str) -> None:
    account_ids = []
    for n, values in enumerate(ACCOUNTS):
        record_id, _, _, _ = store.write(
            TABLES["account"],
            None,
            values,
            user=user,
            now=now - timedelta(days=30 - n),
            system=True,
        )
        account_ids.append(record_id)
    for n, values in enumerate(CASES):
        store.write(
            TABLES["incident"],
            None,
            values | {"_customerid_value": account_ids[n % len(account_ids)]},
            user=user,
            now=now - timedelta(days=3 - n),
            system=True,
        )

"""SANDBOX data: object metadata (as ``sobjects/{Object}/describe`` reports it), record
types and seed records for the Salesforce sandbox. Nothing here is a real org's data.

Case has a second record type, *Billing*, whose restricted ``Priority`` takes only High and
Medium (``RECORD_TYPE_VALUES``); the seeded case about a double charge is a Billing case.
The other objects have only the master record type."""

from __future__ import annotations

from typing import Any

_SYSTEM: list[tuple[str, str, str]] = [
    ("Id", "id", "Record ID"),
    ("CreatedDate", "datetime", "Created Date"),
    ("CreatedById", "reference", "Created By ID"),
    ("LastModifiedDate", "datetime", "Last Modified Date"),
    ("LastModifiedById", "reference", "Last Modified By ID"),
    ("SystemModstamp", "datetime", "System Modstamp"),
    ("IsDeleted", "boolean", "Deleted"),
]

MASTER_RECORD_TYPE = "012000000000000AAA"
BILLING_CASE = "0125g000000BiLlAAK"
INDUSTRIES = ["Agriculture", "Banking", "Education", "Logistics", "Manufacturing", "Technology"]


def _field(
    name: str,
    type_: str,
    label: str,
    *,
    updateable: bool = True,
    nillable: bool = True,
    picklist: list[str] | None = None,
    restricted: bool = False,
    length: int = 0,
    external_id: bool = False,
) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "label": label,
        "length": length,
        "updateable": updateable,
        "createable": updateable,
        "nillable": nillable,
        "defaultedOnCreate": False,
        "externalId": external_id,
        "unique": external_id,
        "custom": name.endswith("__c"),
        "restrictedPicklist": restricted,
        "picklistValues": [
            {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
            for v in picklist or []
        ],
    }


def _record_type(record_type_id: str, name: str, *, default: bool = False) -> dict[str, Any]:
    master = record_type_id == MASTER_RECORD_TYPE
    return {
        "active": True,
        "available": True,
        "defaultRecordTypeMapping": default,
        "developerName": name,
        "master": master,
        "name": name,
        "recordTypeId": record_type_id,
        "urls": {} if master else {"layout": f"/services/data/v59.0/recordtypes/{record_type_id}"},
    }


def _object(
    name: str,
    label: str,
    key_prefix: str,
    fields: list[dict[str, Any]],
    record_types: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    system = [
        _field(n, t, lbl, updateable=False, nillable=n not in ("Id", "IsDeleted"))
        for n, t, lbl in _SYSTEM
    ]
    return {
        "name": name,
        "label": label,
        "keyPrefix": key_prefix,
        "custom": False,
        "createable": True,
        "updateable": True,
        "queryable": True,
        "fields": system + fields,
        "recordTypeInfos": [
            _record_type(MASTER_RECORD_TYPE, "Master", default=True),
            *(record_types or []),
        ],
        "urls": {},
    }


_KEY = _field("Switchyard_Key__c", "string", "Switchyard Key", length=80, external_id=True)

DESCRIBE: dict[str, dict[str, Any]] = {
    "Lead": _object(
        "Lead",
        "Lead",
        "00Q",
        [
            _field("FirstName", "string", "First Name", length=40),
            _field("LastName", "string", "Last Name", nillable=False, length=80),
            _field("Company", "string", "Company", nillable=False, length=255),
            _field("Title", "string", "Title", length=128),
            _field("Email", "email", "Email", length=80),
            _field("Phone", "phone", "Phone", length=40),
            _field("Industry", "picklist", "Industry", picklist=INDUSTRIES),
            _field("NumberOfEmployees", "int", "Employees"),
            _field(
                "LeadSource",
                "picklist",
                "Lead Source",
                picklist=["Web", "Phone Inquiry", "Partner Referral", "Trade Show"],
            ),
            _field(
                "Status",
                "picklist",
                "Status",
                nillable=False,
                restricted=True,
                picklist=["Open - Not Contacted", "Working - Contacted", "Qualified"],
            ),
            _field("Rating", "picklist", "Rating", picklist=["Hot", "Warm", "Cold"]),
            _field("Description", "textarea", "Description", length=32000),
            _field("Qualification_Reason__c", "string", "Qualification Reason", length=255),
            _KEY,
        ],
    ),
    "Case": _object(
        "Case",
        "Case",
        "500",
        [
            _field("CaseNumber", "string", "Case Number", updateable=False, length=30),
            _field("Subject", "string", "Subject", length=255),
            _field("Description", "textarea", "Description", length=32000),
            _field(
                "Status",
                "picklist",
                "Status",
                restricted=True,
                picklist=["New", "Working", "Escalated", "Closed"],
            ),
            _field(
                "Priority",
                "picklist",
                "Priority",
                restricted=True,
                picklist=["High", "Medium", "Low"],
            ),
            _field("Origin", "picklist", "Case Origin", picklist=["Phone", "Email", "Web"]),
            _field("RecordTypeId", "reference", "Record Type ID", length=18),
            _field("AccountId", "reference", "Account ID"),
            _field("ContactId", "reference", "Contact ID"),
            _field("AI_Summary__c", "textarea", "AI Summary", length=32768),
            _field("AI_Next_Step__c", "string", "AI Next Step", length=255),
            _field(
                "AI_Sentiment__c",
                "picklist",
                "AI Sentiment",
                restricted=True,
                picklist=["positive", "neutral", "negative"],
            ),
            _KEY,
        ],
        [_record_type(BILLING_CASE, "Billing")],
    ),
    "Account": _object(
        "Account",
        "Account",
        "001",
        [
            _field("Name", "string", "Account Name", nillable=False, length=255),
            _field("Industry", "picklist", "Industry", picklist=INDUSTRIES),
            _field("NumberOfEmployees", "int", "Employees"),
            _field("Website", "url", "Website", length=255),
            _field("Description", "textarea", "Description", length=32000),
            _KEY,
        ],
    ),
    "Contact": _object(
        "Contact",
        "Contact",
        "003",
        [
            _field("FirstName", "string", "First Name", length=40),
            _field("LastName", "string", "Last Name", nillable=False, length=80),
            _field("Email", "email", "Email", length=80),
            _field("Phone", "phone", "Phone", length=40),
            _field("Title", "string", "Title", length=128),
            _field("AccountId", "reference", "Account ID"),
            _KEY,
        ],
    ),
}

# Object → record type id → restricted picklist → the values records of that type take
# (what Setup's "Picklists Available for Editing" keeps); a field not named takes them all.
RECORD_TYPE_VALUES: dict[str, dict[str, dict[str, list[str]]]] = {
    "Case": {BILLING_CASE: {"Priority": ["High", "Medium"]}},
}

SEED: dict[str, list[dict[str, Any]]] = {
    "Account": [
        {
            "Name": "Northwind Logistics",
            "Industry": "Logistics",
            "NumberOfEmployees": 900,
            "Website": "https://northwind.example",
            "Description": "Freight forwarding, EU.",
        },
        {
            "Name": "Globex Manufacturing",
            "Industry": "Manufacturing",
            "NumberOfEmployees": 4200,
            "Website": "https://globex.example",
        },
    ],
    "Contact": [
        {
            "FirstName": "Ada",
            "LastName": "Lindqvist",
            "Email": "ada@northwind.example",
            "Title": "VP Operations",
        },
        {
            "FirstName": "Ravi",
            "LastName": "Menon",
            "Email": "ravi@globex.example",
            "Title": "IT Manager",
        },
    ],
    "Lead": [
        {
            "FirstName": "Maya",
            "LastName": "Okafor",
            "Company": "Brightline Freight",
            "Title": "Head of Operations",
            "Email": "maya@brightline.example",
            "Industry": "Logistics",
            "NumberOfEmployees": 650,
            "LeadSource": "Web",
            "Status": "Open - Not Contacted",
            "Description": "We need route optimisation for 120 trucks before our Q3 budget "
            "sign-off. Can we see a demo next week?",
        },
        {
            "FirstName": "Tom",
            "LastName": "Berg",
            "Company": "Berg & Sons Bakery",
            "Title": "Owner",
            "Industry": "Agriculture",
            "NumberOfEmployees": 8,
            "LeadSource": "Trade Show",
            "Status": "Open - Not Contacted",
            "Description": "Picked up a brochure at the fair. Just curious.",
        },
    ],
    "Case": [
        {
            "Subject": "Invoice charged twice",
            "RecordTypeId": BILLING_CASE,
            "Status": "New",
            "Priority": "High",
            "Origin": "Email",
            "Description": "Our March invoice was charged twice to the company card. This is "
            "the second time this year. Please refund the duplicate today.",
        },
        {
            "Subject": "How do I export reports?",
            "Status": "New",
            "Priority": "Low",
            "Origin": "Web",
            "Description": "Where can I export the monthly usage report as CSV? Thanks!",
        },
    ],
}

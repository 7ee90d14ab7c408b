"""SANDBOX — the records a fresh :class:`~connectors.hubspot.sandbox.HubSpotSandbox` holds:
a few companies, contacts who wrote in through a form, and deals in several stages, with
deal → company and contact → company associations (typeId 5 / 1 = "Primary")."""

from __future__ import annotations

from connectors.hubspot.sandbox_store import Store, iso

DAY_MS = 86_400_000

COMPANIES = [
    {
        "name": "Nordwind Logistik GmbH",
        "domain": "nordwind-logistik.de",
        "industry": "LOGISTICS_AND_SUPPLY_CHAIN",
        "numberofemployees": "420",
    },
    {
        "name": "Blue Harbor Clinics",
        "domain": "blueharborclinics.com",
        "industry": "HOSPITAL_HEALTH_CARE",
        "numberofemployees": "1300",
    },
    {
        "name": "Atelier Lumen",
        "domain": "atelier-lumen.fr",
        "industry": "DESIGN",
        "numberofemployees": "35",
    },
]

CONTACTS = [
    {
        "firstname": "Hanna",
        "lastname": "Vogel",
        "email": "h.vogel@nordwind-logistik.de",
        "jobtitle": "Head of Operations",
        "company": "Nordwind Logistik GmbH",
        "lifecyclestage": "lead",
        "message": "We run 40 warehouses and want pricing for 60 seats, ideally with a pilot "
        "starting in May. Can you send a quote?",
    },
    {
        "firstname": "Marcus",
        "lastname": "Reid",
        "email": "mreid@blueharborclinics.com",
        "jobtitle": "IT Security Analyst",
        "company": "Blue Harbor Clinics",
        "lifecyclestage": "subscriber",
        "message": "Does your product support SSO with Azure AD and keep data in the EU? "
        "We are comparing vendors for next year.",
    },
    {
        "firstname": "Chloé",
        "lastname": "Martin",
        "email": "chloe@atelier-lumen.fr",
        "jobtitle": "Office Manager",
        "company": "Atelier Lumen",
        "lifecyclestage": "customer",
        "message": "Our invoices since March show the wrong VAT number. Please fix.",
    },
]

DEALS = [
    {
        "dealname": "Nordwind — 60 seats",
        "amount": "54000",
        "dealstage": "qualifiedtobuy",
        "pipeline": "default",
        "description": "Pilot in May, then roll-out to all warehouses. Procurement involved.",
    },
    {
        "dealname": "Blue Harbor — security add-on",
        "amount": "18000",
        "dealstage": "contractsent",
        "pipeline": "default",
        "description": "Contract sent six weeks ago; champion left the company last month.",
    },
    {
        "dealname": "Atelier Lumen — renewal",
        "amount": "4200",
        "dealstage": "closedwon",
        "pipeline": "default",
        "description": "Renewed for two years.",
    },
]


def seed(store: Store, now_ms: int) -> None:
    start = now_ms - 30 * DAY_MS
    company_ids = []
    for n, values in enumerate(COMPANIES):
        company_ids.append(store.create("companies", values, start + n * 1000).id)
    for n, values in enumerate(CONTACTS):
        contact = store.create("contacts", values, start + DAY_MS + n * 1000)
        store.associate("contacts", contact.id, "companies", company_ids[n], 1, "Primary")
    for n, values in enumerate(DEALS):
        close = now_ms + (n * 20 - 10) * DAY_MS
        deal = store.create(
            "deals",
            values | {"closedate": iso(close), "notes_last_updated": iso(now_ms - n * 9 * DAY_MS)},
            start + 2 * DAY_MS + n * 1000,
        )
        store.associate("deals", deal.id, "companies", company_ids[n], 5, "Primary")

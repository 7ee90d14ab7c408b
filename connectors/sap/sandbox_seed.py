"""SANDBOX — the SAP sandbox's starting data: business partners, materials, sales orders,
supplier invoices and one customer order email (all invented)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectors.sap.sandbox_odata import Services

SEED_USER = "CB9980000001"  # a person working in the SANDBOX system

PARTNERS = [
    ("0010100001", "Inlandkunde DE 1", "Fahrradwerk Rhein GmbH", "FAHRRAD"),
    ("0010100002", "Domestic US Customer 2", "Blue Ridge Outfitters Inc.", "BLUERIDGE"),
    ("0010100003", "Domestic GB Customer 3", "Thames Valley Cycles Ltd", "THAMES"),
]
PRODUCTS = [
    ("TG11", "FERT", "PC", "L001", "1.200"),
    ("TG12", "FERT", "PC", "L001", "2.500"),
    ("HT-1000", "HAWA", "EA", "P001", "0.400"),
    ("MZ-FG-R100", "FERT", "PC", "YBFA01", "9.800"),
]


def seed(services: Services) -> None:
    now = services.clock()
    for number, category, name, term in PARTNERS:
        services.insert(
            "A_BusinessPartner",
            {
                "BusinessPartner": number,
                "BusinessPartnerCategory": "2",
                "BusinessPartnerFullName": name,
                "OrganizationBPName1": name,
                "SearchTerm1": term,
                "Industry": category[:10],
            },
            SEED_USER,
            notify=False,
        )
    for product, kind, unit, group, weight in PRODUCTS:
        services.insert(
            "A_Product",
            {
                "Product": product,
                "ProductType": kind,
                "BaseUnit": unit,
                "ProductGroup": group,
                "GrossWeight": weight,
                "WeightUnit": "KG",
            },
            SEED_USER,
            notify=False,
        )
    for n, (partner, *_) in enumerate(PARTNERS):
        order = services.insert(
            "A_SalesOrder",
            {
                "SalesOrderType": "OR",
                "SalesOrganization": "1010",
                "DistributionChannel": "10",
                "OrganizationDivision": "00",
                "SoldToParty": partner,
                "PurchaseOrderByCustomer": f"PO-4500{n:04d}",
                "RequestedDeliveryDate": now.replace(hour=0, minute=0, second=0, microsecond=0)
                + timedelta(days=14 + n),
                "TotalNetAmount": f"{1250 * (n + 1)}.00",
                "TransactionCurrency": "EUR",
            },
            SEED_USER,
            notify=False,
        )
        services.insert(
            "A_SalesOrderItem",
            {
                "SalesOrder": order.values["SalesOrder"],
                "SalesOrderItem": "10",
                "Material": PRODUCTS[n][0],
                "RequestedQuantity": str(5 * (n + 1)),
                "RequestedQuantityUnit": "PC",
                "NetAmount": f"{1250 * (n + 1)}.00",
            },
            SEED_USER,
            notify=False,
        )
    services.insert(
        "A_SupplierInvoice",
        {
            "FiscalYear": str(now.year),
            "CompanyCode": "1010",
            "InvoicingParty": "0017300001",
            "DocumentDate": datetime(now.year, 1, 15, tzinfo=UTC),
            "PostingDate": datetime(now.year, 1, 16, tzinfo=UTC),
            "SupplierInvoiceIDByInvcgParty": "INV-88231-COPY",
            "DocumentCurrency": "EUR",
            "InvoiceGrossAmount": "11900.00",
            "DocumentHeaderText": "Copy of invoice 88231",
            "SupplierPostingLineItemText": "Please note our new bank account",
            "PaymentTerms": "0001",
        },
        SEED_USER,
        notify=False,
    )
    services.insert(
        "YY1_CustomerEmail",
        {
            "subject": "Order PO 4711-A",
            "body": "Hello, please deliver 20 pcs of part RB-100 and 5 EA of HT-1000 by "
            "next Friday. Our PO number is 4711-A. Regards, Fahrradwerk Rhein",
            "received_at": now,
            "sold_to_party": PARTNERS[0][0],
            "sender": "einkauf@fahrradwerk-rhein.example",
        },
        SEED_USER,
        notify=False,
    )

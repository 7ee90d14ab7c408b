"""SANDBOX — the entity sets the SAP sandbox serves and their ``$metadata`` (EDMX).

A small subset of the real services' properties, with SAP's names and types: what the
sample flows (mappings/sap/*.yaml) read and write, plus keys, change dates and users.
``YY1_`` names are custom fields / a custom business object, as S/4HANA's extensibility
apps name them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

S, DT, DTO, DEC = "Edm.String", "Edm.DateTime", "Edm.DateTimeOffset", "Edm.Decimal"


@dataclass(frozen=True)
class P:
    name: str
    type: str = S
    length: int | None = None
    creatable: bool = True
    updatable: bool = True
    label: str = ""


def ro(name: str, type_: str = S, length: int | None = None) -> P:
    return P(name, type_, length, creatable=False, updatable=False)


def fixed(name: str, type_: str = S, length: int | None = None) -> P:
    """Set on create, read-only afterwards."""
    return P(name, type_, length, updatable=False)


@dataclass(frozen=True)
class EntityDef:
    set_name: str
    type_name: str
    keys: tuple[str, ...]
    props: tuple[P, ...]
    navs: dict[str, str] = field(default_factory=dict)  # navigation → child set
    numbered: str | None = None  # key the sandbox numbers on create
    change_field: str | None = None  # Edm.DateTimeOffset stamped on every change
    creatable: bool = True
    updatable: bool = True

    def prop(self, name: str) -> P | None:
        return next((p for p in self.props if p.name == name), None)


SERVICES: dict[str, tuple[EntityDef, ...]] = {
    "API_SALES_ORDER_SRV": (
        EntityDef(
            "A_SalesOrder",
            "A_SalesOrderType",
            ("SalesOrder",),
            (
                ro("SalesOrder", S, 10),
                fixed("SalesOrderType", S, 4),
                fixed("SalesOrganization", S, 4),
                fixed("DistributionChannel", S, 2),
                fixed("OrganizationDivision", S, 2),
                fixed("SoldToParty", S, 10),
                P("PurchaseOrderByCustomer", S, 35),
                P("RequestedDeliveryDate", DT),
                ro("TotalNetAmount", DEC),
                P("TransactionCurrency", S, 5),
                P("HeaderBillingBlockReason", S, 2),
                P("DeliveryBlockReason", S, 2),
                P("YY1_SwitchyardRef_SDH", S, 20, label="Switchyard reference"),
                ro("CreationDate", DT),
                ro("CreatedByUser", S, 12),
                ro("LastChangeDateTime", DTO),
                ro("LastChangedByUser", S, 12),
            ),
            navs={"to_Item": "A_SalesOrderItem"},
            numbered="SalesOrder",
            change_field="LastChangeDateTime",
        ),
        EntityDef(
            "A_SalesOrderItem",
            "A_SalesOrderItemType",
            ("SalesOrder", "SalesOrderItem"),
            (
                ro("SalesOrder", S, 10),
                P("SalesOrderItem", S, 6, updatable=False),
                P("Material", S, 40),
                P("MaterialByCustomer", S, 35),
                P("SalesOrderItemText", S, 40),
                P("RequestedQuantity", DEC),
                P("RequestedQuantityUnit", S, 3),
                ro("NetAmount", DEC),
            ),
        ),
    ),
    "API_BUSINESS_PARTNER": (
        EntityDef(
            "A_BusinessPartner",
            "A_BusinessPartnerType",
            ("BusinessPartner",),
            (
                ro("BusinessPartner", S, 10),
                fixed("BusinessPartnerCategory", S, 1),
                P("BusinessPartnerFullName", S, 81),
                P("OrganizationBPName1", S, 40),
                P("SearchTerm1", S, 20),
                P("Industry", S, 10),
                ro("CreatedByUser", S, 12),
                ro("CreationDate", DT),
                ro("LastChangedByUser", S, 12),
                ro("LastChangeDateTime", DTO),
            ),
            numbered="BusinessPartner",
            change_field="LastChangeDateTime",
        ),
    ),
    "API_PRODUCT_SRV": (
        EntityDef(
            "A_Product",
            "A_ProductType",
            ("Product",),
            (
                ro("Product", S, 40),
                fixed("ProductType", S, 4),
                P("BaseUnit", S, 3),
                P("ProductGroup", S, 9),
                P("GrossWeight", DEC),
                P("WeightUnit", S, 3),
                ro("LastChangedByUser", S, 12),
                ro("LastChangeDateTime", DTO),
            ),
            numbered="Product",
            change_field="LastChangeDateTime",
        ),
    ),
    "API_SUPPLIERINVOICE_PROCESS_SRV": (
        EntityDef(
            "A_SupplierInvoice",
            "A_SupplierInvoiceType",
            ("SupplierInvoice", "FiscalYear"),
            (
                ro("SupplierInvoice", S, 10),
                ro("FiscalYear", S, 4),
                fixed("CompanyCode", S, 4),
                fixed("InvoicingParty", S, 10),
                P("DocumentDate", DT),
                P("PostingDate", DT),
                P("SupplierInvoiceIDByInvcgParty", S, 16),
                fixed("DocumentCurrency", S, 5),
                fixed("InvoiceGrossAmount", DEC),
                P("DocumentHeaderText", S, 25),
                P("SupplierPostingLineItemText", S, 50),
                P("PaymentTerms", S, 4),
                P("PaymentBlockingReason", S, 1),
                P("BPBankAccountInternalID", S, 4),
                P("YY1_AnomalyKind", S, 20),
                P("YY1_AnomalyNote", S, 255),
                ro("LastChangeDateTime", DTO),
            ),
            numbered="SupplierInvoice",
            change_field="LastChangeDateTime",
        ),
    ),
    "YY1_CUSTOMEREMAIL_CDS": (
        EntityDef(
            "YY1_CustomerEmail",
            "YY1_CustomerEmailType",
            ("EmailID",),
            (
                ro("EmailID", S, 20),
                P("subject", S, 500),
                P("body", S, 20000),
                P("received_at", DTO),
                P("sold_to_party", S, 10),
                P("sender", S, 241),
                ro("LastChangeDateTime", DTO),
            ),
            numbered="EmailID",
            change_field="LastChangeDateTime",
        ),
    ),
}

ENTITIES: dict[str, EntityDef] = {e.set_name: e for defs in SERVICES.values() for e in defs}
SERVICE_OF: dict[str, str] = {e.set_name: s for s, defs in SERVICES.items() for e in defs}


def _property(p: P) -> str:
    attrs = [f"Name={quoteattr(p.name)}", f"Type={quoteattr(p.type)}"]
    if p.length:
        attrs.append(f'MaxLength="{p.length}"')
    if p.type == DEC:
        attrs.append('Precision="16" Scale="3"')
    attrs.append(f"sap:label={quoteattr(p.label or p.name)}")
    if not p.creatable:
        attrs.append('sap:creatable="false"')
    if not p.updatable:
        attrs.append('sap:updatable="false"')
    return f"<Property {' '.join(attrs)}/>"


def edmx(service: str) -> str:
    """The service's ``$metadata`` document."""
    defs = SERVICES[service]
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"'
        ' xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"'
        ' xmlns:sap="http://www.sap.com/Protocols/SAPData">',
        '<edmx:DataServices m:DataServiceVersion="2.0">',
        f'<Schema Namespace="{service}" xml:lang="en" sap:schema-version="1"'
        ' xmlns="http://schemas.microsoft.com/ado/2008/09/edm">',
    ]
    assocs: list[str] = []
    for entity in defs:
        parts.append(f'<EntityType Name="{entity.type_name}" sap:content-version="1">')
        parts.append(
            "<Key>" + "".join(f'<PropertyRef Name="{k}"/>' for k in entity.keys) + "</Key>"
        )
        parts += [_property(p) for p in entity.props]
        for nav, child in entity.navs.items():
            name = f"assoc_{entity.set_name}_{nav}"
            parts.append(
                f'<NavigationProperty Name="{nav}" Relationship="{service}.{name}"'
                f' FromRole="FromRole_{name}" ToRole="ToRole_{name}"/>'
            )
            child_type = ENTITIES[child].type_name
            assocs.append(
                f'<Association Name="{name}">'
                f'<End Type="{service}.{entity.type_name}" Multiplicity="1"'
                f' Role="FromRole_{name}"/>'
                f'<End Type="{service}.{child_type}" Multiplicity="*" Role="ToRole_{name}"/>'
                "</Association>"
            )
        parts.append("</EntityType>")
    parts += assocs
    parts.append(f'<EntityContainer Name="{service}_Entities" m:IsDefaultEntityContainer="true">')
    for entity in defs:
        flags = "" if entity.creatable else ' sap:creatable="false"'
        flags += "" if entity.updatable else ' sap:updatable="false"'
        parts.append(
            f'<EntitySet Name="{entity.set_name}" EntityType="{service}.{entity.type_name}"'
            f'{flags} sap:content-version="1"/>'
        )
    parts += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(parts)

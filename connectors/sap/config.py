"""Typed config and secrets of a ``sap`` connection.

``config.transport`` chooses how Switchyard talks to the system:

* ``odata`` — S/4HANA OData V2 APIs under ``config.base_url`` (e.g. ``API_SALES_ORDER_SRV``),
  authenticated with ``secrets.user`` + ``secrets.password`` (Basic) or, when
  ``config.token_url`` is set, OAuth client credentials (``secrets.client_id`` +
  ``secrets.client_secret``);
* ``rfc`` — RFC/BAPI through PyRFC (``pip install 'switchyard[sap-rfc]'`` after installing
  the SAP NW RFC SDK), with ``config.rfc`` holding the connection parameters
  (``ashost``/``sysnr`` or ``mshost``/``msserv``/``sysid``/``group``) and
  ``secrets.user`` + ``secrets.password``.

``config.client`` is the SAP client (Mandant). ``secrets.webhook_secret`` authenticates
Event Mesh / Integration Suite deliveries (:mod:`connectors.sap.webhooks`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, model_validator

Transport = Literal["odata", "rfc"]

DEFAULT_OBJECTS = {
    "A_SalesOrder": "API_SALES_ORDER_SRV",
    "A_SalesOrderItem": "API_SALES_ORDER_SRV",
    "A_BusinessPartner": "API_BUSINESS_PARTNER",
    "A_Product": "API_PRODUCT_SRV",
    "A_SupplierInvoice": "API_SUPPLIERINVOICE_PROCESS_SRV",
}


def _no_credentials(url: AnyHttpUrl | None, name: str) -> None:
    if url is not None and (url.username or url.password):
        raise ValueError(f"{name} must not contain user:password@ (put them in secrets)")


class RfcParams(BaseModel):
    """PyRFC ``Connection`` parameters other than user and password."""

    model_config = ConfigDict(extra="forbid")

    ashost: str | None = Field(None, description="Application server host.")
    sysnr: str | None = Field(None, pattern=r"^[0-9]{2}$", description="System number, '00'.")
    mshost: str | None = Field(None, description="Message server (load balancing).")
    msserv: str | None = None
    sysid: str | None = None
    group: str | None = None
    saprouter: str | None = None
    lang: str = Field("EN", min_length=1, max_length=2)
    pool_size: int = Field(3, ge=1, le=10, description="Parallel RFC connections kept open.")
    timeout_seconds: int = Field(60, ge=1, le=600, description="Cancels a call after this.")

    @model_validator(mode="after")
    def _a_server(self) -> RfcParams:
        if not self.ashost and not self.mshost:
            raise ValueError("give ashost + sysnr (one server) or mshost (load balancing)")
        if self.ashost and not self.sysnr:
            raise ValueError("ashost needs sysnr")
        return self


class SapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transport: Transport = Field("odata", description="odata (S/4HANA APIs) or rfc (BAPIs).")
    client: str = Field(pattern=r"^[0-9]{3}$", description="SAP client, e.g. '100'.")
    base_url: AnyHttpUrl | None = Field(None, description="OData host, e.g. https://s4.example.com")
    service_path: str = Field("/sap/opu/odata/sap", description="Prefix of every service root.")
    token_url: AnyHttpUrl | None = Field(
        None, description="OAuth token endpoint; set for client-credentials auth instead of Basic."
    )
    rfc: RfcParams | None = None
    objects: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_OBJECTS),
        description=(
            "Object (entity set) name → OData service, or 'SERVICE/EntitySet' when the "
            "entity set is named differently (custom business objects)."
        ),
    )
    deep_insert: dict[str, list[str]] = Field(
        default_factory=lambda: {"A_SalesOrder": ["to_Item"]},
        description="Navigations a create may fill (fields '<nav>.<Property>' of lists).",
    )
    create_reference: dict[str, str] = Field(
        default_factory=lambda: {"A_SalesOrder": "PurchaseOrderByCustomer"},
        description=(
            "Per object, the searchable field a create stores its client reference in "
            "(derived from the job); it is looked up first, so a retry never creates twice."
        ),
    )
    poll_objects: dict[str, str] = Field(
        default_factory=lambda: {"A_SalesOrder": "LastChangeDateTime"},
        description="Object → its Edm.DateTimeOffset change-date field, for polling.",
    )
    poll_page_size: int = Field(100, ge=1, le=1000)
    write_user: str | None = Field(
        None,
        description=(
            "SAP user Switchyard writes as; its changes start no flow (defaults to secrets.user)."
        ),
    )
    event_objects: dict[str, str] = Field(
        default_factory=lambda: {
            "sap.s4.beh.salesorder.v1.SalesOrder": "A_SalesOrder:SalesOrder",
            "sap.s4.beh.businesspartner.v1.BusinessPartner": "A_BusinessPartner:BusinessPartner",
        },
        description="CloudEvent type prefix → 'Object:KeyField' in the event's data.",
    )
    batch_size: int = Field(50, ge=1, le=500, description="Changesets per $batch request.")
    timeout_seconds: float = Field(30.0, gt=0, le=300)

    @model_validator(mode="after")
    def _transport_needs(self) -> SapConfig:
        _no_credentials(self.base_url, "base_url")
        _no_credentials(self.token_url, "token_url")
        if self.transport == "odata" and self.base_url is None:
            raise ValueError("transport odata needs base_url")
        if self.transport == "rfc" and self.rfc is None:
            raise ValueError("transport rfc needs rfc (ashost, sysnr, ...)")
        for name, target in self.objects.items():
            if not target or target.count("/") > 1:
                raise ValueError(f"objects.{name}: give 'SERVICE' or 'SERVICE/EntitySet'")
        for prefix, target in self.event_objects.items():
            if target.count(":") != 1:
                raise ValueError(f"event_objects.{prefix}: give 'Object:KeyField'")
        return self

    @property
    def oauth(self) -> bool:
        return self.token_url is not None


class SapSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str | None = Field(None, description="SAP user (Basic auth, RFC logon).")
    password: SecretStr | None = None
    client_id: str | None = Field(None, description="OAuth client id (client credentials).")
    client_secret: SecretStr | None = None
    webhook_secret: SecretStr = Field(min_length=16, description="Shared secret of deliveries.")

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> SapSecrets:
        basic = self.user is not None or self.password is not None
        oauth = self.client_id is not None or self.client_secret is not None
        if basic and oauth:
            raise ValueError("give user + password, or client_id + client_secret, not both")
        if oauth and (not self.client_id or self.client_secret is None):
            raise ValueError("OAuth needs client_id and client_secret")
        if not oauth and (not self.user or self.password is None):
            raise ValueError("needs user and password, or client_id and client_secret")
        return self


def check_pair(config: SapConfig, secrets: SapSecrets) -> None:
    """The secrets fit the transport and auth the config chose."""
    if config.transport == "rfc" and secrets.user is None:
        raise ValueError("transport rfc logs on with secrets.user and secrets.password")
    if config.transport == "odata" and config.oauth != (secrets.client_id is not None):
        raise ValueError(
            "config.token_url (OAuth) needs secrets.client_id + client_secret; "
            "without it, secrets.user + password (Basic)"
        )

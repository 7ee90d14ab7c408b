"""OData V2 details: /Date(ms)/ values, key predicates, EDMX parsing, $batch bodies."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from connectors.sap import metadata, multipart, wire
from core.errors import ConnectorTerminalError

EDMX = """<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"
 xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"
 xmlns:sap="http://www.sap.com/Protocols/SAPData">
 <edmx:DataServices m:DataServiceVersion="2.0">
  <Schema Namespace="ZSRV" xmlns="http://schemas.microsoft.com/ado/2008/09/edm">
   <EntityType Name="HeadType">
    <Key><PropertyRef Name="Id"/></Key>
    <Property Name="Id" Type="Edm.String" Nullable="false" MaxLength="10"
     sap:creatable="false" sap:updatable="false" sap:label="Document"/>
    <Property Name="Amount" Type="Edm.Decimal" Precision="16" Scale="3" Nullable="false"/>
    <Property Name="Note" Type="Edm.String" sap:updatable="false"/>
    <NavigationProperty Name="to_Line" Relationship="ZSRV.assoc_HL" FromRole="F" ToRole="T"/>
   </EntityType>
   <EntityType Name="LineType">
    <Key><PropertyRef Name="Id"/><PropertyRef Name="Line"/></Key>
    <Property Name="Id" Type="Edm.String"/><Property Name="Line" Type="Edm.String"/>
    <Property Name="Qty" Type="Edm.Decimal"/>
   </EntityType>
   <Association Name="assoc_HL">
    <End Type="ZSRV.HeadType" Multiplicity="1" Role="F"/>
    <End Type="ZSRV.LineType" Multiplicity="*" Role="T"/>
   </Association>
   <EntityContainer Name="ZSRV_Entities" m:IsDefaultEntityContainer="true">
    <EntitySet Name="Head" EntityType="ZSRV.HeadType" sap:updatable="false"/>
    <EntitySet Name="Line" EntityType="ZSRV.LineType"/>
   </EntityContainer>
  </Schema>
 </edmx:DataServices>
</edmx:Edmx>"""


def test_dates_travel_as_epoch_milliseconds() -> None:
    assert wire.format_date("2026-04-03") == "/Date(1775174400000)/"
    assert wire.format_date(date(2026, 4, 3)) == "/Date(1775174400000)/"
    moment = datetime(2026, 4, 3, 12, 30, tzinfo=UTC)
    assert wire.format_date(moment, offset=True) == "/Date(1775219400000+0000)/"
    assert wire.parse_date("/Date(1775219400000+0000)/") == moment
    assert wire.from_wire("/Date(1775174400000)/", "Edm.DateTime") == "2026-04-03"
    assert wire.from_wire("/Date(1775219400000)/", "Edm.DateTimeOffset") == (
        "2026-04-03T12:30:00.000Z"
    )
    assert wire.to_wire(20, "Edm.Decimal") == "20"
    with pytest.raises(ValueError, match="not a date"):
        wire.to_wire("next Friday", "Edm.DateTime")


def test_key_predicates_quote_and_compound_keys() -> None:
    assert wire.key_predicate(["SalesOrder"], "4711") == "('4711')"
    assert wire.key_predicate(["A"], "O'Neil") == "('O''Neil')"
    assert wire.key_predicate(["Inv", "Year"], "51/2026") == "(Inv='51',Year='2026')"
    with pytest.raises(ValueError, match="does not fit"):
        wire.key_predicate(["Inv", "Year"], "51")


def test_edmx_is_read_with_sap_annotations() -> None:
    parsed = metadata.parse(EDMX)
    head = parsed.entity_set("Head")
    assert head.type.keys == ("Id",)
    assert not head.updatable
    assert head.type.navigations == {"to_Line": "ZSRV.LineType"}
    fields = {f.name: f for f in metadata.field_meta(parsed, head, ["to_Line"])}
    assert not fields["Id"].updateable
    assert fields["Id"].label == "Document"
    assert fields["Amount"].required
    assert fields["Note"].updateable  # creatable, though not updatable
    assert fields["to_Line.Qty"].type == "list of Edm.Decimal"
    with pytest.raises(ConnectorTerminalError, match="no entity set Nope"):
        parsed.entity_set("Nope")


def test_a_dtd_is_refused() -> None:
    with pytest.raises(ConnectorTerminalError, match="DTD"):
        metadata.parse('<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')


def test_batch_bodies_round_trip() -> None:
    get = multipart.HttpMessage("GET Head('1') HTTP/1.1", {"accept": "application/json"})
    patch = multipart.HttpMessage(
        "PATCH Head('1') HTTP/1.1", {"content-type": "application/json"}, '{"Note":"x"}'
    )
    body = multipart.build([get, [patch]], "batch_1")
    parsed = multipart.parse(body, "multipart/mixed; boundary=batch_1")
    assert isinstance(parsed[0], multipart.HttpMessage)
    assert parsed[0].method == "GET"
    assert isinstance(parsed[1], list)
    assert parsed[1][0].target == "Head('1')"
    assert parsed[1][0].body == '{"Note":"x"}'
    with pytest.raises(multipart.BatchMalformed):
        multipart.parse(body, "application/json")

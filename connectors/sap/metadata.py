"""``$metadata`` (EDMX, OData V2) as entity descriptions and FieldMeta.

Read per entity set: the key properties, each property's ``Type``, ``sap:label``,
``Nullable``, ``sap:creatable`` and ``sap:updatable`` (absent means true), the set's own
``sap:creatable`` / ``sap:updatable``, and navigation properties with their target type.
FieldMeta has one flag, ``updateable``: it is true for a property that may be written on
create or on update; the connector checks the operation's own flag before it writes.
Fields of a deep-insert navigation (``to_Item``) are described as ``to_Item.<Property>``,
list-valued, one entry per child record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from xml.etree import ElementTree

from connectors.base import FieldMeta
from core.errors import ConnectorTerminalError

SAP_NS = "http://www.sap.com/Protocols/SAPData"


@dataclass(frozen=True)
class Prop:
    name: str
    type: str
    label: str = ""
    nullable: bool = True
    creatable: bool = True
    updatable: bool = True
    max_length: int | None = None


@dataclass(frozen=True)
class EntityType:
    name: str  # qualified: Namespace.Name
    keys: tuple[str, ...]
    properties: dict[str, Prop]
    navigations: dict[str, str] = field(default_factory=dict)  # name → target type


@dataclass(frozen=True)
class EntitySet:
    name: str
    type: EntityType
    creatable: bool = True
    updatable: bool = True


@dataclass(frozen=True)
class ServiceMetadata:
    sets: dict[str, EntitySet]
    types: dict[str, EntityType]

    def entity_set(self, name: str) -> EntitySet:
        found = self.sets.get(name)
        if found is None:
            known = ", ".join(sorted(self.sets)) or "none"
            raise ConnectorTerminalError(f"the SAP service has no entity set {name} ({known})")
        return found


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _flag(element: ElementTree.Element, name: str) -> bool:
    return element.get(f"{{{SAP_NS}}}{name}", "true").lower() != "false"


def _children(element: ElementTree.Element, name: str) -> Iterable[ElementTree.Element]:
    return (child for child in element if _local(child.tag) == name)


def parse(text: bytes | str) -> ServiceMetadata:
    """Parse an EDMX document; DTDs and entities are refused before parsing."""
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if "<!DOCTYPE" in raw or "<!ENTITY" in raw:
        raise ConnectorTerminalError("SAP's $metadata contains a DTD; refused")
    try:
        root = ElementTree.fromstring(raw)  # noqa: S314 (no DTD, checked above)
    except ElementTree.ParseError as exc:
        raise ConnectorTerminalError(f"SAP's $metadata is not XML: {exc}") from None
    types: dict[str, EntityType] = {}
    ends: dict[tuple[str, str], str] = {}  # (association, role) → type
    containers: list[tuple[str, ElementTree.Element]] = []
    for schema in root.iter():
        if _local(schema.tag) != "Schema":
            continue
        namespace = schema.get("Namespace", "")
        for assoc in _children(schema, "Association"):
            for end in _children(assoc, "End"):
                ends[(f"{namespace}.{assoc.get('Name')}", end.get("Role", ""))] = end.get(
                    "Type", ""
                )
        for node in _children(schema, "EntityContainer"):
            containers.append((namespace, node))
        for node in _children(schema, "EntityType"):
            qualified = f"{namespace}.{node.get('Name')}"
            keys = tuple(
                ref.get("Name", "")
                for key in _children(node, "Key")
                for ref in _children(key, "PropertyRef")
            )
            props = {}
            for prop in _children(node, "Property"):
                name = prop.get("Name", "")
                length = prop.get("MaxLength", "")
                props[name] = Prop(
                    name=name,
                    type=prop.get("Type", "Edm.String"),
                    label=prop.get(f"{{{SAP_NS}}}label", ""),
                    nullable=prop.get("Nullable", "true").lower() != "false",
                    creatable=_flag(prop, "creatable"),
                    updatable=_flag(prop, "updatable"),
                    max_length=int(length) if length.isdigit() else None,
                )
            navs = {
                nav.get("Name", ""): f"{nav.get('Relationship')}|{nav.get('ToRole')}"
                for nav in _children(node, "NavigationProperty")
            }
            types[qualified] = EntityType(qualified, keys, props, navs)
    for entity in types.values():
        for name, link in entity.navigations.items():
            relationship, _, role = link.partition("|")
            entity.navigations[name] = ends.get((relationship, role), "")
    sets: dict[str, EntitySet] = {}
    for _, container in containers:
        for node in _children(container, "EntitySet"):
            typed = types.get(node.get("EntityType", ""))
            if typed is not None:
                name = node.get("Name", "")
                sets[name] = EntitySet(
                    name, typed, _flag(node, "creatable"), _flag(node, "updatable")
                )
    return ServiceMetadata(sets, types)


def field_meta(
    metadata: ServiceMetadata, entity_set: EntitySet, deep: Iterable[str] = ()
) -> list[FieldMeta]:
    entity = entity_set.type
    found = [
        FieldMeta(
            name=p.name,
            type=p.type,
            label=p.label,
            updateable=(p.creatable and entity_set.creatable)
            or (p.updatable and entity_set.updatable),
            required=not p.nullable and p.name not in entity.keys,
        )
        for p in entity.properties.values()
    ]
    for nav in deep:
        target = metadata.types.get(entity.navigations.get(nav, ""))
        if target is None:
            continue
        found += [
            FieldMeta(
                name=f"{nav}.{p.name}",
                type=f"list of {p.type}",
                label=p.label,
                updateable=p.creatable,
            )
            for p in target.properties.values()
            if p.name not in entity.keys
        ]
    return found

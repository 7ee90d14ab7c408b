"""Where a value sits in a YAML file, so a flow's problems can name a line and a column.

PyYAML's ``safe_load`` forgets positions; composing keeps them on every node. A
:class:`SourceMap` is built from the same node tree the document's data is constructed
from, so a pydantic error ``loc`` (keys and list indexes) can be followed back to the text
the author typed. Positions are 1-based, as editors and compilers print them.

A location that does not exist in the file (a required key that is missing, a key pydantic
invents such as a union member's tag) resolves to the nearest ancestor that does exist:
the author then lands on the mapping that lacks the key rather than on line 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

Loc = tuple[str | int, ...]
KEY_SEGMENT = "[key]"  # pydantic's marker for "the dict key itself failed"


@dataclass(frozen=True)
class Located:
    """The outcome of :meth:`SourceMap.resolve`: a position and whether it is exact."""

    line: int
    column: int
    exact: bool


@dataclass(frozen=True)
class DuplicateKey:
    """A key written twice in one mapping; YAML keeps the last silently, so we must say."""

    key: str
    line: int
    column: int
    first_line: int


def _position(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _scalar_key(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


class SourceMap:
    """Positions of one YAML document's keys and values."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    @classmethod
    def parse(cls, text: str) -> SourceMap:
        """Positions only (see :func:`load` for data and positions from one parse)."""
        return cls(yaml.compose(text, Loader=yaml.SafeLoader))

    def resolve(self, path: Loc, *, at_key: bool = False) -> Located:
        """Follow ``path``; stop at the deepest node that exists.

        ``at_key`` points at the last key rather than its value (for an unknown key the
        key is what is wrong); a value written as an indented block is also shown at its
        key, since the block itself starts on the next line. When the path stops early,
        the position is the key under which the deepest existing mapping or list was
        written, which reads as "this section" — the root document has no key, so its
        first node stands in.
        """
        if self.root is None:
            return Located(1, 1, exact=not path)
        node: yaml.Node = self.root
        key_node: yaml.Node | None = None
        matched = 0
        for index, segment in enumerate(path):
            if segment == KEY_SEGMENT and key_node is not None and index == len(path) - 1:
                return Located(*_position(key_node), exact=True)
            child = _child(node, segment)
            if child is None:
                break
            key_node, node = child
            matched += 1
        exact = matched == len(path)
        # A block collection starts on the line after its key; the key names it better.
        block = isinstance(node, yaml.CollectionNode) and not node.flow_style
        if exact and not ((at_key or block) and key_node is not None):
            return Located(*_position(node), exact=True)
        if key_node is not None:
            return Located(*_position(key_node), exact=exact)
        return Located(*_position(node), exact=exact)

    def node(self, path: Loc) -> yaml.Node | None:
        """The node at exactly ``path``, or None."""
        node = self.root
        for segment in path:
            child = _child(node, segment) if node is not None else None
            if child is None:
                return None
            node = child[1]
        return node

    def locate(self, path: Loc, *, at_key: bool = False) -> tuple[int, int]:
        """``(line, column)`` of ``path`` (see :meth:`resolve`)."""
        found = self.resolve(path, at_key=at_key)
        return found.line, found.column

    def duplicate_keys(self) -> list[DuplicateKey]:
        """Every repeated key, in document order."""
        found: list[DuplicateKey] = []
        for mapping in _mappings(self.root):
            seen: dict[str, yaml.Node] = {}
            for key, _ in mapping.value:
                name = _scalar_key(key)
                if name is None:
                    continue
                if name in seen:
                    line, column = _position(key)
                    found.append(DuplicateKey(name, line, column, _position(seen[name])[0]))
                else:
                    seen[name] = key
        return sorted(found, key=lambda dup: (dup.line, dup.column))


def _child(node: yaml.Node, segment: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    """The (key node, value node) under ``segment``; the last duplicate wins, as in YAML."""
    if isinstance(node, yaml.MappingNode):
        found = None
        for key, value in node.value:
            if _scalar_key(key) == str(segment):
                found = (key, value)
        return found
    if isinstance(node, yaml.SequenceNode) and isinstance(segment, int):
        items: Sequence[yaml.Node] = node.value
        if 0 <= segment < len(items):
            return None, items[segment]
    return None


def _mappings(node: yaml.Node | None) -> Iterator[yaml.MappingNode]:
    # Iterative, and by identity: an alias makes the graph share nodes (even cycles).
    stack = [node] if node is not None else []
    visited: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in visited:
            continue
        visited.add(id(current))
        if isinstance(current, yaml.MappingNode):
            yield current
            for key, value in reversed(current.value):
                stack.extend((value, key))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(reversed(current.value))


def load(text: str) -> tuple[Any, SourceMap]:
    """The document's data and its positions, from one parse.

    Raises ``yaml.YAMLError`` (a ``MarkedYAMLError`` carries the position) for text that is
    not YAML, or holds more than one document.
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return data, SourceMap(root)

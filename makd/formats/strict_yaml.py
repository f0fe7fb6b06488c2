"""YAML read strictly: a key written twice in one mapping is an error naming both lines, never a silent last-wins.

PyYAML keeps the last of two equal keys of a mapping and drops the first without a word: a config with two
`SOLVER:` blocks loses the first block, a study listing the condition `baseline` twice keeps only the second
(which then runs under the CE baseline's name). Every YAML file the project reads (configs and each file of a
`_BASE_` chain, study files, stage-1 prompt files, the published figures, run folders' config.yaml) and every
YAML value of a command-line override goes through `load_yaml`.

The loader is yaml.SafeLoader with one more pass over the composed node tree before it is constructed, so the
check knows the full path of the mapping (`conditions`, `SOLVER`) and the line of each key. A YAML merge (`<<:`)
overriding a merged key is YAML's own inheritance and is not a repeat.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from makd.formats.errors import DuplicateKeyError, line_pair

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Repeated(Exception):
    def __init__(self, key: str, where: str, lines: tuple[int, int]) -> None:
        super().__init__(key)
        self.key, self.where, self.lines = key, where, lines


class _StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping naming one key twice (see the module docstring)."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self._check_unique_keys(node, "", set())
        return self.construct_document(node)

    def _check_unique_keys(self, node: Node, path: str, seen: set[int]) -> None:
        if id(node) in seen:  # an alias of a node already checked (or a recursive structure)
            return
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                self._check_unique_keys(item, f"{path}[{index}]", seen)
        elif isinstance(node, MappingNode):
            lines: dict[Hashable, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    self._check_unique_keys(value_node, path, seen)
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in lines:
                        raise _Repeated(str(key), path, (lines[key], line))
                    lines[key] = line
                except TypeError:  # an unhashable key (a list): PyYAML refuses it itself when constructing
                    pass
                child = f"{path}.{key}" if path else str(key)
                self._check_unique_keys(value_node, child, seen)


def load_yaml(text: str, source: str) -> Any:
    """`yaml.safe_load(text)`, except that a key repeated in any mapping is a DuplicateKeyError naming `source`, the
    key with its path and both lines. Malformed YAML raises yaml.YAMLError, as yaml.safe_load does."""
    loader = _StrictSafeLoader(text)
    try:
        return loader.get_single_data()
    except _Repeated as repeated:
        full = f"{repeated.where}.{repeated.key}" if repeated.where else repeated.key
        raise DuplicateKeyError(
            f"{source}: {full} is written twice ({line_pair(repeated.lines)}); YAML would keep only the second and "
            "silently drop the first: write it once (merge the two)",
            repeated.key,
            repeated.where,
            repeated.lines,
        ) from None
    finally:
        loader.dispose()

"""YAML with positions: every mapping and list remembers where its keys and values stand.

PyYAML's ``safe_load`` forgets positions; this loader keeps the node marks so that every config
problem can be reported as ``FILE:LINE:COL``.
"""

from __future__ import annotations

from typing import Any

import yaml

from opcli.errors import ConfigError


class YamlMap(dict):
    """A mapping that remembers where it, each key and each value stand in the file."""

    mark: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.key_marks: dict[Any, Any] = {}
        self.value_marks: dict[Any, Any] = {}


class YamlList(list):
    mark: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.item_marks: list[Any] = []


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str, path: str) -> None:
        super().__init__(stream)
        self.path = path
        self.duplicates: list[str] = []

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 (PyYAML's signature)
        self.flatten_mapping(node)
        out = YamlMap()
        out.mark = node.start_mark
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value", key_node.start_mark)
            if key in out:
                self.duplicates.append(f"{where(self.path, key_node.start_mark)}: duplicate key {key!r}")
            out[key] = self.construct_object(value_node, deep=True)
            out.key_marks[key] = key_node.start_mark
            out.value_marks[key] = value_node.start_mark
        return out

    def construct_sequence(self, node, deep=False):  # noqa: ANN001
        out = YamlList()
        out.mark = node.start_mark
        for child in node.value:
            out.append(self.construct_object(child, deep=True))
            out.item_marks.append(child.start_mark)
        return out


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_sequence)


def where(path: str, mark: Any) -> str:
    if mark is None:
        return path
    return f"{path}:{mark.line + 1}:{mark.column + 1}"


def parse_yaml(text: str, path: str) -> Any:
    loader = _Loader(text, path)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{where(path, mark)}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(loader.duplicates)
    return data

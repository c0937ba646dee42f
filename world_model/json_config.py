"""``to_dict`` / ``from_dict`` for the frozen config dataclasses, written once.

A config class inherits :class:`JSONConfig`; checkpoints store ``to_dict()`` as JSON and rebuild
the config with ``from_dict``. Nested configs become nested dicts and tuples become lists (what
JSON gives back); ``from_dict`` reverses both and names unknown keys instead of failing inside
the constructor.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

Config = TypeVar("Config", bound="JSONConfig")


def _plain(value: Any) -> Any:
    """Tuples (at any depth) -> lists, as JSON would return them."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class JSONConfig:
    """Mixin for frozen config dataclasses: a JSON-ready dict and back."""

    def to_dict(self) -> dict[str, Any]:
        """Every field, nested configs as dicts, tuples as lists."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls: type[Config], values: dict[str, Any]) -> Config:
        """The config of ``values`` (from :meth:`to_dict`, possibly through JSON); fields left
        out keep their defaults. Raises ValueError naming unknown keys."""
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} keys {sorted(unknown)}; known: {sorted(fields)}"
            )
        hints = typing.get_type_hints(cls)
        return cls(**{name: _typed(hints[name], value) for name, value in values.items()})


def _typed(hint: Any, value: Any) -> Any:
    """A value read from JSON, turned back into the field's type where JSON lost it."""
    if isinstance(hint, type) and issubclass(hint, JSONConfig) and isinstance(value, dict):
        return hint.from_dict(value)
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    return value

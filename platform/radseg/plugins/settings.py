"""A plugin's settings as admins see them (the plugins page, ``GET /-/plugins``): validated
values, secrets masked.

The values are what the plugin's ``radseg_configure`` returned (its validated settings model);
for a plugin that has none, or is unavailable, the raw ``[plugins.<name>]`` table. Anything that
looks like a secret (pydantic ``SecretStr``/``SecretBytes``, or a key naming a password, token,
secret or key) is shown as ``********``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

from radseg.settings import MASK, SECRET_NAME

__all__ = ["MASK", "SECRET_NAME", "masked", "plugin_settings"]


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return value


def masked(value: Any, key: str = "") -> Any:
    """``value`` with secrets replaced by :data:`MASK`, JSON-able."""
    if isinstance(value, SecretStr | SecretBytes):
        return MASK
    if key and SECRET_NAME.search(key) and value not in (None, "", [], {}):
        return MASK
    value = _plain(value)
    if isinstance(value, Mapping):
        return {str(k): masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def plugin_settings(
    configs: Mapping[str, Any], raw: Mapping[str, Any], name: str
) -> dict[str, Any]:
    """Plugin ``name``'s settings, masked: its validated settings from ``configs`` (the host's
    ``configs``) when it has them, else its ``raw`` table from the settings file."""
    validated = configs.get(name)
    source = validated if validated is not None else raw
    shown = masked(source)
    return shown if isinstance(shown, dict) else {"value": shown}

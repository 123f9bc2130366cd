"""Plugins: the host that loads them, the registries of what they provide, their settings.

- :mod:`radseg.plugins.host` — :class:`PluginHost` (pluggy, entry points, registries filled
  from hook results), :class:`PluginInfo` (``validate_settings``, which plugins call, is in
  :mod:`radseg.contracts`, the plugin API);
- :mod:`radseg.plugins.registry` — :class:`Registry`, the name → class registries of dataset
  sources, model backends, exporters and job kinds;
- :mod:`radseg.plugins.settings` — a plugin's settings as admins see them, secrets masked.

Which plugins an admin enabled or disabled is a use case, :mod:`radseg.workflows.plugins`.
(The *model* registry — trained model versions, their cards and comparisons — is
:mod:`radseg.model_registry`, unrelated to these registries of plugin classes.)
"""

from __future__ import annotations

from radseg.contracts import validate_settings  # its home is the plugin API; kept here too
from radseg.plugins.host import (
    ENTRY_POINT_GROUP,
    HookCall,
    PluginHost,
    PluginInfo,
)
from radseg.plugins.registry import Registry

__all__ = [
    "ENTRY_POINT_GROUP",
    "HookCall",
    "PluginHost",
    "PluginInfo",
    "Registry",
    "validate_settings",
]

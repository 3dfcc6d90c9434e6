"""Discover services (reference or third-party) through the ``mlgate.services`` entry points.

A service is a folder that exposes ``service() -> mlgate.types.Service``: bundled models,
their processors and their original routes. The core never names one; removing a
service is deleting its folder and its entry-point line.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from mlgate.errors import ConfigurationError
from mlgate.types import Service

__all__ = ["ENTRY_POINT_GROUP", "discover_services"]

ENTRY_POINT_GROUP = "mlgate.services"
log = logging.getLogger("mlgate.services")


def discover_services(enabled: list[str] | None = None) -> list[Service]:
    """Load installed services, all of them or only those named in ``enabled``."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    names = sorted(found) if enabled is None else enabled
    services: list[Service] = []
    for name in names:
        ep = found.get(name)
        if ep is None:
            raise ConfigurationError(
                f"service '{name}' is not installed; installed: {', '.join(sorted(found))}"
            )
        factory = ep.load()
        service = factory()
        if not isinstance(service, Service):
            raise ConfigurationError(f"entry point '{name}' did not return an mlgate.types.Service")
        services.append(service)
    return services

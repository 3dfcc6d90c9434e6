"""mlgate: serve machine-learning models as secure, metered, monitored HTTP APIs.

The public API for people writing runtimes, services and processors. The server itself
is built by :func:`mlgate.http.create_app` (or ``mlgate serve``).
"""

from __future__ import annotations

from mlgate.errors import (
    ConfigurationError,
    InvalidInput,
    MlgateError,
    ModelLoadError,
    UnsafeArtifact,
)
from mlgate.runtimes.base import LoadContext, ModelRuntime
from mlgate.settings import Settings, load_settings
from mlgate.types import (
    BatchingConfig,
    BundledModel,
    BundledWorkflow,
    Manifest,
    Processor,
    RouteAdapter,
    Service,
)

__version__ = "0.1.0"

__all__ = [
    "BatchingConfig",
    "BundledModel",
    "BundledWorkflow",
    "ConfigurationError",
    "InvalidInput",
    "LoadContext",
    "Manifest",
    "MlgateError",
    "ModelLoadError",
    "ModelRuntime",
    "Processor",
    "RouteAdapter",
    "Service",
    "Settings",
    "UnsafeArtifact",
    "__version__",
    "load_settings",
]

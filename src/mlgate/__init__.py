"""mlgate: serve machine-learning models as secure, metered, monitored HTTP APIs."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

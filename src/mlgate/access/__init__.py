"""Access control: API keys (and, with the gateway, tokens, plans and the limiter)."""

from __future__ import annotations

from mlgate.access.keys import ApiKey, KeyStore, NewKey

__all__ = ["ApiKey", "KeyStore", "NewKey"]

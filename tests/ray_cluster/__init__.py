"""mlgate on a real two-node Ray cluster (``make soak-ray``: needs ``mlgate[ray]``, PostgreSQL, Redis)."""

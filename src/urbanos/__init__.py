"""urbanos: an urban OS data platform built around an ETSI NGSI-LD context broker."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]

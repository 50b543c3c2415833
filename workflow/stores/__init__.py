"""The only code that writes engine rows: one module per transition, composed by ``DjangoStore``."""

from __future__ import annotations

from .db import DjangoStore

__all__ = ["DjangoStore"]

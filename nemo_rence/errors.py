"""Errors shared by every component's config (no imports: any module may raise them)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the field and what is allowed."""

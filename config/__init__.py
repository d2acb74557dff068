"""Typed settings for Attune chat-ops (environment ``ATTUNE_*`` and an optional TOML file)."""

from config.settings import Settings, load_settings, slack_enabled

__all__ = ["Settings", "load_settings", "slack_enabled"]

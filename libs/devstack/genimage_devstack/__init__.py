"""Local infrastructure for development and tests (not shipped in service images)."""

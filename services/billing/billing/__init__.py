"""genimage billing service."""

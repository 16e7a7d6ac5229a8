"""genimage generation worker."""

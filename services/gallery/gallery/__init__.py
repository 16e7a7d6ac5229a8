"""genimage gallery service."""

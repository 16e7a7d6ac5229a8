"""genimage gateway: the public REST API."""

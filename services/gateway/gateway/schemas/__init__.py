"""Request and response bodies of the public API (what the OpenAPI document shows), one
module per resource."""

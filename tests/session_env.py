"""Settings every service process of the test session gets (through ``stack_env``).

Background work such as webhook sending runs in every gateway replica, so all replicas of
the session must agree on it. Only webhook targets on loopback are allowed: tests send
nothing off this machine.
"""

from __future__ import annotations

import uuid

STRIPE_SECRET = "whsec_test_gateway_stripe_secret_0123456789"
ADMIN_EMAIL = f"admin-{uuid.uuid4().hex[:8]}@example.com"

SESSION_ENV = {
    "GATEWAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
    "GATEWAY_WEBHOOK_PUBLIC_TARGETS": "false",
    "GATEWAY_WEBHOOK_RETRY_BASE_S": "0.3",
    "GATEWAY_WEBHOOK_RETRY_FACTOR": "2",
    "GATEWAY_WEBHOOK_POLL_INTERVAL_S": "0.2",
    "GATEWAY_WEBHOOK_MAX_ATTEMPTS": "4",
    "GATEWAY_WEBHOOK_TIMEOUT_S": "5",
    "GATEWAY_SSE_HEARTBEAT_S": "1",
    "GATEWAY_STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
    "GATEWAY_ADMIN_EMAIL": ADMIN_EMAIL,
}

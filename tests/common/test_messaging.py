from __future__ import annotations

import uuid

from genimage_common.messaging import metric_subject

USER = uuid.UUID("11111111-1111-4111-8111-111111111111")


def test_metric_subjects_do_not_carry_user_ids() -> None:
    assert metric_subject(f"generation.completed.{USER}") == "generation.completed.*"
    assert metric_subject("rpc.billing.reserve") == "rpc.billing.reserve"
    assert metric_subject("_INBOX.abc123.def") == "_INBOX.*"

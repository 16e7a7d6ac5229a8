from __future__ import annotations

import pytest

from genimage_common.pricing import Pricing, share


def test_default_list_prices() -> None:
    p = Pricing()
    assert p.cost("image", 1) == 5
    assert p.cost("image", 4) == 20
    assert p.cost("video", 1) == 10
    assert p.signup_grant == 20


def test_prices_are_configurable_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRICING_IMAGE_CREDITS_PER_OUTPUT", "3")
    monkeypatch.setenv("PRICING_SIGNUP_GRANT", "100")
    p = Pricing()
    assert p.cost("image", 2) == 6
    assert p.signup_grant == 100


def test_the_delivered_share_never_exceeds_the_reservation() -> None:
    assert share(20, 4, 2) == 10
    assert share(20, 4, 9) == 20
    assert share(20, 4, 0) == 0


def test_the_delivered_share_is_proportional_rounded_down_and_bounded() -> None:
    assert share(20, 4, 2) == 10
    assert share(20, 4, 9) == 20  # more than reserved: never more than the amount
    assert share(20, 4, -1) == 0
    assert share(10, 3, 1) == 3  # rounded down, in the user's favour
    assert share(10, 3, 3) == 10


def test_zero_outputs_is_not_a_price() -> None:
    with pytest.raises(ValueError):
        Pricing().cost("image", 0)

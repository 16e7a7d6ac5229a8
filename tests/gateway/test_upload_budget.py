"""The uploads' memory budget on its own: first come first served, a bounded wait that ends
in a 503, shares given back whatever happens to the waiter; and the estimate from a header."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from gateway.errors import PayloadTooLarge
from gateway.uploads import Header, MemoryBudget, read_header
from genimage_common.errors import ServiceUnavailable

pytestmark = pytest.mark.timeout(30)


async def test_first_come_first_served() -> None:
    budget = MemoryBudget(100)
    order: list[str] = []
    await budget.acquire(60, timeout=1)

    async def take(name: str, amount: int) -> None:
        await budget.acquire(amount, timeout=5)
        order.append(name)

    big = asyncio.create_task(take("big", 90))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 10))  # would fit now, but the big one came first
    await asyncio.sleep(0.05)
    assert order == [] and budget.used == 60
    budget.release(60)
    await asyncio.gather(big, small)
    assert order == ["big", "small"] and budget.used == 100


async def test_a_wait_that_lasts_too_long_is_a_503_and_frees_the_queue() -> None:
    budget = MemoryBudget(100)
    await budget.acquire(80, timeout=1)
    with pytest.raises(ServiceUnavailable) as info:
        await budget.acquire(50, timeout=0.05)
    assert info.value.fields["retry_after"] >= 1
    # The one that gave up no longer holds back those behind it.
    await asyncio.wait_for(budget.acquire(20, timeout=1), 1)
    assert budget.used == 100


async def test_cancelled_waiters_take_nothing() -> None:
    budget = MemoryBudget(10)
    await budget.acquire(10, timeout=1)
    waiter = asyncio.create_task(budget.acquire(5, timeout=5))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    budget.release(10)
    assert budget.used == 0


async def test_more_than_the_whole_budget_is_refused_at_once() -> None:
    with pytest.raises(PayloadTooLarge):
        await MemoryBudget(10).acquire(11, timeout=5)


def _png(mode: str, size: tuple[int, int]) -> io.BytesIO:
    out = io.BytesIO()
    Image.new(mode, size).save(out, format="PNG")
    out.seek(0)
    return out


def test_estimate_counts_bytes_not_only_pixels() -> None:
    gray = read_header(_png("L", (1000, 1000)))
    rgba = read_header(_png("RGBA", (1000, 1000)))
    assert (gray.mode, gray.decoded_bytes) == ("L", 1_000_000)
    assert (rgba.mode, rgba.decoded_bytes) == ("RGBA", 4_000_000)
    # Same pixels, but a grayscale image still needs its RGB copy and that copy's encoding.
    assert gray.peak_bytes >= 8 * gray.pixels
    progressive = Header("JPEG", 1000, 1000, "RGB", 3, progressive=True)
    baseline = Header("JPEG", 1000, 1000, "RGB", 3)
    assert progressive.peak_bytes > baseline.peak_bytes

"""Running a model with its fallbacks, within the job's deadline.

The requested model runs first; when it fails with an error that another model may not have
(provider down, timing out, rate limited, misconfigured, malformed answers), the models in its
``fallbacks`` are tried in order (their own fallbacks after them, each model once). Content
refusals and invalid jobs stop the chain: trying elsewhere would route around a safety system
or fail the same way. The whole chain runs under the job's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from genimage_common.catalog import ModelSpec

from .cancellation import CancelToken
from .errors import DeadlineExceeded, GenerationError, InvalidInput, JobCanceled
from .metrics import PROVIDER_REQUESTS
from .providers.base import Progress, Provider, RenderedOutput, RenderRequest
from .providers.http import DEADLINE, HttpProvider, outcome_of

log = logging.getLogger(__name__)
MAX_CHAIN = 6


@dataclass(frozen=True)
class ChainResult:
    outputs: list[RenderedOutput]
    provider: str
    model: str
    provider_cost_usd: float | None
    # (model, error code) of each model that failed before this one succeeded.
    failures: list[tuple[str, str]]


class ProviderChain:
    def __init__(self, catalog: Mapping[str, ModelSpec], providers: Mapping[str, Provider]) -> None:
        self.catalog = catalog
        self.providers = providers

    def models_for(self, model: str, kind: str) -> list[str]:
        """The requested model then its fallbacks, depth first, each once, those that make ``kind``."""
        order: list[str] = []

        def visit(name: str) -> None:
            if name in order or name not in self.catalog or len(order) >= MAX_CHAIN:
                return
            order.append(name)
            for fallback in self.catalog[name].fallbacks:
                visit(fallback)

        visit(model)
        return [name for name in order if self.catalog[name].supports(kind)]

    @staticmethod
    def _count(provider: Provider, outcome: str) -> None:
        # Remote providers count each HTTP call themselves; in-process ones count here.
        if not isinstance(provider, HttpProvider):
            PROVIDER_REQUESTS.labels(provider=provider.name, outcome=outcome).inc()

    async def run(
        self,
        model: str,
        request: RenderRequest,
        *,
        deadline: float,
        progress: Progress,
        cancel: CancelToken,
        on_start: Callable[[Provider], Awaitable[None]],
    ) -> ChainResult:
        chain = self.models_for(model, request.kind)
        if not chain or chain[0] != model:
            raise InvalidInput(f"model {model!r} does not make {request.kind}s")
        failures: list[tuple[str, str]] = []
        token = DEADLINE.set(deadline)
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + (deadline - time.monotonic())):
                last: GenerationError | None = None
                for name in chain:
                    provider = self.providers[name]
                    await on_start(provider)
                    try:
                        outputs = await provider.generate(request, progress=progress, cancel=cancel)
                    except GenerationError as exc:
                        self._count(provider, outcome_of(exc))
                        failures.append((name, exc.code))
                        last = exc
                        if not exc.fallback:
                            raise
                        log.warning(
                            "model failed, trying the next in the chain",
                            extra={"model": name, "code": exc.code, "error": exc.message[:300]},
                        )
                        continue
                    except JobCanceled:
                        self._count(provider, "canceled")
                        raise
                    self._count(provider, "ok")
                    cost = self.catalog[name].cost_usd_per_output
                    return ChainResult(
                        outputs=outputs,
                        provider=provider.name,
                        model=name,
                        provider_cost_usd=round(cost * len(outputs), 6) if cost is not None else None,
                        failures=failures,
                    )
                assert last is not None
                if len(failures) > 1:
                    last.message = f"{last.message} (tried {', '.join(f'{m}: {c}' for m, c in failures)})"
                raise last
        except TimeoutError as exc:
            # Renderers in threads cannot be interrupted: the token makes them stop at their next step.
            cancel.cancel()
            tried = ", ".join(f"{m}: {c}" for m, c in failures) or "nothing finished"
            raise DeadlineExceeded(f"out of time before the billing hold expires ({tried})") from exc
        finally:
            DEADLINE.reset(token)

"""Applies events to the read model: idempotent (the inbox) and order-independent (upserts that
only move forward)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.events import (
    CreditsCommitted,
    Event,
    GenerationCanceled,
    GenerationCompleted,
    GenerationFailed,
    GenerationProgress,
    GenerationRequested,
    GenerationStarted,
)

from .models import generations, images

RANK = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "canceled": 2}


async def _upsert_generation(
    session: AsyncSession, *, gid: Any, user_id: Any, status: str | None, **values: Any
) -> None:
    """Insert or update one generation; ``status`` only applies if it does not move backwards."""
    g = generations.c
    insert_values = {"id": gid, "user_id": user_id, **values}
    set_: dict[str, Any] = {k: values[k] for k in values}
    if status is not None:
        rank = RANK[status]
        insert_values.update(status=status, status_rank=rank)
        forward = g.status_rank < rank
        set_["status"] = case((forward, status), else_=g.status)
        set_["status_rank"] = case((forward, rank), else_=g.status_rank)
    set_["updated_at"] = func.now()
    stmt = insert(generations).values(**insert_values)
    await session.execute(stmt.on_conflict_do_update(index_elements=[g.id], set_=set_))


async def apply(session: AsyncSession, event: Event[Any]) -> None:
    data = event.data
    match data:
        case GenerationRequested():
            await _upsert_generation(
                session,
                gid=data.generation_id,
                user_id=data.user_id,
                status="queued",
                kind=data.kind,
                prompt=data.prompt,
                negative_prompt=data.negative_prompt,
                model=data.model,
                width=data.width,
                height=data.height,
                n=data.n,
                seed=data.seed,
                output_format=data.output_format,
                cost=data.cost,
                requested_at=data.requested_at or event.time,
            )
            # Images projected before their request learn the prompt now.
            await session.execute(
                update(images)
                .where(images.c.generation_id == data.generation_id)
                .values(prompt=data.prompt, kind=data.kind)
            )
        case GenerationStarted():
            await _upsert_generation(
                session, gid=data.generation_id, user_id=data.user_id, status="running", provider=data.provider
            )
        case GenerationProgress():
            await _upsert_generation(session, gid=data.generation_id, user_id=data.user_id, status="running")
            await session.execute(
                update(generations)
                .where(
                    generations.c.id == data.generation_id,
                    generations.c.status_rank < 2,
                    generations.c.progress < data.progress,
                )
                .values(progress=data.progress)
            )
        case GenerationCompleted():
            await _upsert_generation(
                session,
                gid=data.generation_id,
                user_id=data.user_id,
                status="succeeded",
                progress=1.0,
                provider=data.provider,
                timings=data.timings.model_dump(),
            )
            gen = (await session.execute(generations.select().where(generations.c.id == data.generation_id))).first()
            for out in data.outputs:
                await session.execute(
                    insert(images)
                    .values(
                        id=out.image_id,
                        user_id=data.user_id,
                        generation_id=data.generation_id,
                        index=out.index,
                        object_key=out.object_key,
                        thumbnail_key=out.thumbnail_key,
                        content_type=out.content_type,
                        width=out.width,
                        height=out.height,
                        bytes=out.bytes,
                        sha256=out.sha256,
                        duration_s=out.duration_s,
                        prompt=gen.prompt if gen else None,
                        kind=gen.kind if gen else None,
                        created_at=event.time,
                    )
                    .on_conflict_do_nothing()
                )
        case GenerationFailed():
            await _upsert_generation(
                session,
                gid=data.generation_id,
                user_id=data.user_id,
                status="failed",
                error=data.error.model_dump(),
            )
        case GenerationCanceled():
            await _upsert_generation(session, gid=data.generation_id, user_id=data.user_id, status="canceled")
        case CreditsCommitted():
            await _upsert_generation(
                session, gid=data.generation_id, user_id=data.user_id, status=None, charged=data.amount
            )
        case _:
            pass

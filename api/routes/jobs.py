"""Job queues for on-call staff: depths and workers, failed jobs, requeue and delete.

RQ speaks synchronous Redis, so the app keeps one synchronous client beside its asyncio one
(``rq_redis``, opened by ``rq_redis_lifespan``): its connection pool is thread-safe and
shared by every request, where a client per request would open a new connection each time.
Every RQ call runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import msgspec
from litestar import Controller, Litestar, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from api.auth import STAFF_SECURITY
from api.schemas import STORABLE_TEXT
from api.staff import ON_CALL, audit_detail
from booking.accounts.staff import StaffPrincipal
from booking.redis_client import sync_client
from jobs import admin

T = TypeVar("T")
JobId = Annotated[
    str,
    PathParameter(
        min_length=1,
        max_length=128,
        pattern=admin.JOB_ID_PATTERN,
        description="An RQ job id: letters, digits, '_' and '-'",
    ),
]
QueueName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=STORABLE_TEXT)]


@asynccontextmanager
async def rq_redis_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Open the app's synchronous Redis client for RQ, and close it at shutdown."""
    client = sync_client(app.state.settings.redis_url, command_timeout=5.0)
    app.state.rq_redis = client
    try:
        yield
    finally:
        client.close()


async def _off_loop(request: Request[Any, Any, Any], call: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(functools.partial(call, request.app.state.rq_redis, *args))


class FailedJobList(msgspec.Struct, frozen=True):
    items: list[admin.FailedJob]


class RequeueFailed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Requeue every failed job of ``queue``, or of every queue when it is left out."""

    queue: QueueName | None = None


class RequeuedCount(msgspec.Struct, frozen=True):
    requeued: int


class JobsController(Controller):
    path = "/staff"
    tags = ["staff"]
    security = STAFF_SECURITY

    @get(
        "/queues",
        summary="Queue depths and workers",
        description="For each job queue: queued, running, scheduled, deferred and failed jobs, and "
        "how long the next job has waited; and every worker with its state and current job.",
        opt={"roles": ON_CALL},
    )
    async def queues(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffPrincipal]
    ) -> admin.Status:
        return await _off_loop(request, admin.queue_status)

    @get(
        "/jobs/failed",
        summary="Failed jobs, most recent first",
        description="Each with its function, arguments, times and the last line of its error.",
        opt={"roles": ON_CALL},
    )
    async def failed(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        queue: Annotated[
            str | None,
            QueryParameter(max_length=64, pattern=STORABLE_TEXT, description="Only this queue's failed jobs"),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="At most this many")] = 50,
    ) -> FailedJobList:
        return FailedJobList(items=await _off_loop(request, admin.failed_jobs, queue, limit))

    @post(
        "/jobs/{job_id:str}/requeue",
        summary="Run a failed job again",
        description="Puts the failed job back at the end of its queue. Only failed jobs: another "
        "operator's requeue a moment earlier answers 409.",
        status_code=200,
        opt={"roles": ON_CALL, "audit": "job.requeue", "audit_target": "job"},
    )
    async def requeue(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffPrincipal], job_id: JobId
    ) -> admin.RequeuedJob:
        requeued = await _off_loop(request, admin.requeue, job_id)
        audit_detail(request, queue=requeued.queue)
        return requeued

    @post(
        "/jobs/requeue-failed",
        summary="Run every failed job again",
        description="Requeues the failed jobs of one queue, or of all of them; answers how many.",
        status_code=200,
        opt={"roles": ON_CALL, "audit": "jobs.requeue_failed", "audit_target": "queue"},
    )
    async def requeue_failed(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        data: JSONBody[RequeueFailed],
    ) -> RequeuedCount:
        count = await _off_loop(request, admin.requeue_all, data.queue)
        audit_detail(request, requeued=count, **({"target_id": data.queue} if data.queue else {}))
        return RequeuedCount(requeued=count)

    @delete(
        "/jobs/{job_id:str}",
        summary="Delete a failed job",
        description="Removes a failed job and its results for good. Queued, running and finished "
        "jobs are refused (409).",
        opt={"roles": ON_CALL, "audit": "job.delete", "audit_target": "job"},
    )
    async def delete_failed(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffPrincipal], job_id: JobId
    ) -> None:
        queue = await _off_loop(request, admin.delete_failed, job_id)
        audit_detail(request, queue=queue)

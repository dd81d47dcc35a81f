"""A worker that starts a job as soon as it is enqueued instead of at its next poll.

arq polls its queue every ``poll_delay`` seconds, so a job waits half of that on average
(about 25 ms at 0.05 s). The API publishes a wake-up on ``<queue>:wake`` after every
enqueue (:meth:`app.core.queue.Queue.enqueue`); this worker waits for it between polls, with
``poll_delay`` as the upper bound, so nothing depends on the message arriving: a lost
wake-up only costs one poll delay. Burst mode (tests) keeps arq's own loop.

Every wake-up makes each worker read the queue, where the jobs that workers are running
stay until they end, and so do those of a killed worker until their in-progress keys
expire (the longest job timeout plus 10 s: an hour by default). arq reads only the first
``queue_read_limit`` (100) due entries: once that many are jobs in progress, a worker
starts nothing, and the jobs behind them (the reconciler's own cron job among them) wait
an hour. :meth:`WakeableWorker._runnable_job_ids` reads page after page instead, dropping
the ids this worker runs and, in one pipelined round trip per page, those in progress
elsewhere, until it has a job for every free slot; arq then checks each id it starts
with a transaction of its own (WATCH, EXISTS, ZSCORE).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq.connections import log_redis_info
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.asyncio import Redis

from app.core.queue import REDIS_DOWN, RedisOutage, wake_channel

logger = logging.getLogger(__name__)


class WakeableWorker(Worker):
    def __init__(self, *args: Any, subscriber: Redis, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriber = subscriber
        self._wake = asyncio.Event()
        self._outage = RedisOutage(logger, "worker", "no job starts (running jobs go on)")
        self._scan_from = 0

    async def main(self) -> None:
        """arq's loop, riding out Redis outages: while Redis does not answer, the worker
        retries with a bounded back-off instead of ending (its running jobs go on, their
        state is in the database), and starts jobs again once it answers."""
        if self.burst or self._pool is None:
            await super().main()
            return
        logger.info(
            "Starting worker for %d functions: %s", len(self.functions), ", ".join(self.functions)
        )
        try:
            await log_redis_info(self.pool, logger.info)
        except REDIS_DOWN as exc:
            self._outage.lost(exc)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        listener = asyncio.create_task(self._listen(), name="worker-wake")
        try:
            while True:
                self._wake.clear()
                try:
                    if self._outage.down:  # an iteration may send no command at all
                        await self.pool.ping()
                    await self._poll_iteration()
                except REDIS_DOWN as exc:
                    await asyncio.sleep(self._outage.lost(exc))
                    continue
                self._outage.back()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_delay_s):
                        await self._wake.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    #: Queue entries read per poll at most, in pages of ``queue_read_limit``; a poll that
    #: stops there without finding enough to start resumes where it stopped next time.
    queue_scan_limit = 1000

    async def _poll_iteration(self) -> None:
        """arq's poll (:meth:`arq.worker.Worker._poll_iteration`), reading the queue with
        :meth:`_runnable_job_ids` instead of taking its first ``queue_read_limit`` ids."""
        wanted = self.max_jobs - self.job_counter
        if self.burst and self.max_burst_jobs >= 0:
            burst_remaining = self.max_burst_jobs - self._jobs_started()
            if burst_remaining < 1:
                return
            wanted = min(wanted, burst_remaining)
        if self.allow_pick_jobs and wanted > 0:
            await self.start_jobs(await self._runnable_job_ids(wanted))
        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # an error of run_job is raised here, as arq does
        await self.heart_beat()

    async def _runnable_job_ids(self, wanted: int) -> list[bytes]:
        """Ids of due jobs that no worker has started, oldest first: at least ``wanted``
        when the queue holds that many within ``queue_scan_limit`` entries (from where the
        previous poll stopped, if it stopped at that bound), all it found otherwise."""
        now = timestamp_ms()
        page_size = self.queue_read_limit
        start, scanned = self._scan_from, 0
        found: list[bytes] = []
        while True:
            page: list[bytes] = await self.pool.zrangebyscore(
                self.queue_name, min=float("-inf"), max=now, start=start, num=page_size
            )
            found += await self._not_started(page)
            start, scanned = start + len(page), scanned + len(page)
            if len(found) >= wanted or len(page) < page_size:
                self._scan_from = 0  # the next poll reads from the head again
                return found
            if scanned >= self.queue_scan_limit:
                self._scan_from = start
                return found

    async def _not_started(self, job_ids: list[bytes]) -> list[bytes]:
        """``job_ids`` less those this worker runs and, in one pipelined round trip, those
        whose in-progress key exists (started by another worker, maybe one that died)."""
        candidates = [job_id for job_id in job_ids if job_id.decode() not in self.tasks]
        if not candidates:
            return []
        async with self.pool.pipeline(transaction=False) as pipe:
            for job_id in candidates:
                pipe.exists(in_progress_key_prefix + job_id.decode())
            started = await pipe.execute()
        return [job_id for job_id, taken in zip(candidates, started, strict=True) if not taken]

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        for job_id in job_ids:
            if self.job_counter >= self.max_jobs:
                return  # arq's would wait here for a slot, holding up the poll loop
            counted = self.job_counter
            try:
                await super().start_jobs([job_id])
            except REDIS_DOWN:
                # arq counted the job and took a slot before Redis failed it: give them
                # back, or each outage would leave the worker with fewer slots.
                if job_id.decode() not in self.tasks and self.job_counter > counted:
                    self._release_sem_dec_counter_on_complete()
                raise

    async def run_job(self, job_id: str, score: int) -> None:
        """arq's job, whose bookkeeping in Redis may fail during an outage. The run's own
        state is in the database: it ended, or it is still queued there and the
        reconciler enqueues it again."""
        try:
            await super().run_job(job_id, score)
        except REDIS_DOWN as exc:
            self._outage.lost(exc)

    async def _end_jobs(self) -> None:
        """Cancel the running jobs and wait until every one has ended. arq's close cancels
        them once and gathers them, which is not enough: a job can absorb its cancellation
        (it landed between two of its awaits) and run on to its end (a deployment that
        finishes instead of being handed back), and a second cancellation of arq's task
        ends that task while the job it waits for still runs, so the process could exit
        under it (a webhook attempt made but not recorded). Here arq's tasks are cancelled
        once, the jobs themselves again every 0.5 s while they run, for ``stop_wait_s`` at
        most; the ended tasks leave the task table (arq's gather then has nothing left to
        wait for)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_wait_s
        jobs = [task for task in self.job_tasks.values() if not task.done()]
        running = [task for task in self.tasks.values() if not task.done()]
        for task in running:
            if not task.cancelling():  # arq's handle_sig may have cancelled it already
                task.cancel()
        running += jobs
        while running and loop.time() < deadline:
            await asyncio.wait(running, timeout=0.5)
            running = [task for task in running if not task.done()]
            for task in running:
                if task in jobs:
                    task.cancel()
        if running:
            logger.warning(
                "%d job(s) still running %.0f s after the stop", len(running), self.stop_wait_s
            )
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                if not task.cancelled():
                    task.exception()  # seen (arq logged a job's failure itself)

    async def _listen(self) -> None:
        outage = RedisOutage(
            logger, "wake-up listener", f"the worker polls every {self.poll_delay_s} s"
        )
        while True:
            try:
                async with self._subscriber.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(wake_channel(self.queue_name))
                    outage.back()
                    async for _ in pubsub.listen():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as exc:
                await asyncio.sleep(outage.lost(exc))

    #: How long a stopping worker waits for its running jobs to end, at most.
    stop_wait_s = 30.0

    async def close(self) -> None:
        await self._end_jobs()
        try:
            await super().close()
        except REDIS_DOWN as exc:  # arq's close stops at its first Redis command
            self._outage.lost(exc)
            if self.on_shutdown:
                await self.on_shutdown(self.ctx)
            if self._pool is not None:
                with contextlib.suppress(Exception):
                    await self._pool.close(close_connection_pool=True)
                self._pool = None
        finally:
            with contextlib.suppress(Exception):
                await self._subscriber.aclose()

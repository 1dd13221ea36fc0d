"""The read pool: reads off the event loop, a bounded queue, a bounded share of a core."""

import asyncio
import threading
import time

import pytest

from node.reads import ReadPool, ReadsBusy


def _spin(seconds: float) -> str:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return threading.current_thread().name


async def test_reads_run_on_the_reader_thread_and_the_queue_is_bounded() -> None:
    pool = ReadPool(queue_max=2, share=1.0)
    gate = threading.Event()
    try:
        held = [asyncio.ensure_future(pool.run(gate.wait)) for _ in range(2)]
        await asyncio.sleep(0)  # let both take their places
        assert pool.admitted == 2
        with pytest.raises(ReadsBusy, match="2 reads"):
            await pool.run(_spin, 0.0)
        gate.set()
        await asyncio.gather(*held)
        assert (await pool.run(_spin, 0.0)).startswith("reader")
        assert pool.admitted == 0
    finally:
        pool.close()


async def test_a_stream_of_heavy_reads_keeps_to_its_share() -> None:
    share, job_s, jobs = 0.25, 0.02, 10
    pool = ReadPool(queue_max=jobs, share=share)
    try:
        started = time.monotonic()
        await asyncio.gather(*(pool.run(_spin, job_s) for _ in range(jobs)))
        elapsed = time.monotonic() - started
    finally:
        pool.close()
    # Each job rests three times its CPU time before the next: at least (jobs - 1) rests.
    assert elapsed >= (jobs - 1) * job_s * (1 - share) / share

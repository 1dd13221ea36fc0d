"""The node's threads: how many a node starts for its cores, and their names in the OS."""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from node.runtime import VERIFY_THREADS_MAX, _executors, name_os_thread


@pytest.mark.parametrize(
    ("cores", "verify_threads"), [(1, None), (2, 2), (3, 3), (64, VERIFY_THREADS_MAX)]
)
def test_a_node_starts_threads_only_beside_its_event_loop(
    cores: int, verify_threads: int | None
) -> None:
    pool, writer = _executors(cores)
    try:
        if verify_threads is None:
            assert (pool, writer) == (None, None)  # one core: the event loop does all
            return
        assert pool is not None
        assert writer is not None
        assert (pool._max_workers, writer._max_workers) == (verify_threads, 1)
    finally:
        for executor in (pool, writer):
            if executor is not None:
                executor.shutdown()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_pool_threads_carry_their_names_into_the_os() -> None:
    def os_name() -> str:
        return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    with ThreadPoolExecutor(1, thread_name_prefix="verify", initializer=name_os_thread) as pool:
        assert pool.submit(os_name).result() == "verify_0"

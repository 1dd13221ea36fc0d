"""Child process of test_crash.py: appends a deterministic chain to a store, acknowledging each.

    python -m tests.ledger.crash_child STORE_PATH BLOCKS TXS_PER_BLOCK

Resumes after whatever the store already holds (the chain is the same every run: the test
network's keys, nonces and timestamps are fixed), appends the rest one block at a time and
prints "height block_hash_hex" once `append` has returned, flushing, so that every line the
parent reads is a block the store has promised to keep.
"""

import sys
from pathlib import Path

from ledger.store import BlockStore
from tests import factory


def main(path: str, blocks_count: int, txs_per_block: int) -> None:
    net = factory.network()
    # Signed up front, so that the time between two acknowledgements is all `append`.
    certified = list(factory.chain(net, blocks_count, txs_per_block))
    with BlockStore.open(Path(path), net.genesis) as store:
        for block, cert in certified:
            if block.height <= store.height:
                continue
            store.append(block, cert)
            print(block.height, block.hash.hex(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))

"""CityLedger's ledger core: pure data, encodings, signatures, Merkle proofs and the block store.

Nothing in this package talks to the network, schedules coroutines, reads a clock or draws random
numbers (ruff's banned-api rule enforces it); only `ledger.store` touches LevelDB.
"""

"""The `cityledger` command line: operators, clerks, auditors and evaluators meet CityLedger here.

Dependencies point one way (cli -> node -> consensus -> ledger). Offline checks (`verify
--data-dir`, `verify-proof`) use ledger functions only; everything online goes through the
client library in `cli.client` (docs/client.md), which agency systems import too. Every
failure a user can cause ends with one sentence on stderr and a non-zero exit (1: refused,
not found or verification failed; 2: bad usage), never a traceback.
"""

"""The ledger's error family: everything the outside world can get wrong.

Decoders and validators either return a valid value or raise a subclass of `LedgerError`, never
anything else. Our own bugs are assertion failures, not these.
"""


class LedgerError(Exception):
    """Base of every error caused by input from outside (a peer, a client, a file on disk)."""


class InvalidEncoding(LedgerError):
    """Bytes that are not the canonical encoding of the expected value."""


class InvalidTransaction(LedgerError):
    """A transaction that must not enter the ledger; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InvalidBlock(LedgerError):
    """A block (or its certificate) that does not extend the chain validly."""


class InvalidGenesis(LedgerError):
    """A genesis file with one or more problems, all listed in `problems`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid genesis: " + "; ".join(problems))
        self.problems = problems


class StoreError(LedgerError):
    """The block store on disk is damaged or is not the store of this chain."""

"""The committed head as this replica knows it, and the window of heights above it.

Owns the head (the last block committed here, through consensus or by state transfer), the
certificate that proves it (a ViewChange carries it), and the watermark window: the heights
above the head the replica takes part in. The head moves one block at a time, only through
`advance`, and never back. It decides nothing about votes and emits nothing: the replica
commits a block, then advances the head here.
"""

from ledger.block import Block, Certificate, ChainHead


class Chain:
    def __init__(self, head: ChainHead, certificate: Certificate | None, window: int) -> None:
        assert (certificate is None) == (head.height == 0), "a head above 0 needs its cert"
        self.head = head
        self.certificate = certificate
        self.window = window

    @property
    def height(self) -> int:
        return self.head.height

    @property
    def top(self) -> int:
        """The highest height of the window."""
        return self.head.height + self.window

    def takes(self, height: int) -> bool:
        """Is `height` above the head and within the window?"""
        return self.head.height < height <= self.top

    def advance(self, block: Block, certificate: Certificate) -> None:
        assert block.height == self.head.height + 1
        assert certificate.height == block.height
        self.head = self.head.advance(block)
        self.certificate = certificate

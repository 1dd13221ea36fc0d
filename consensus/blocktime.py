"""Block time: how far a proposed block's stamp may be from the replica's own clock.

The primary stamps each block with its clock (never below the parent's stamp: a ledger rule),
and the stamp is the `now` at which every tx of the block is judged (TTL, clock skew). Before
this rule a replica accepted any stamp up to `clock_skew_ms` (30 s by default) ahead of its
clock, so a Byzantine primary could move the chain's time half a minute ahead. Now a replica
prepares a *new proposal* only if its stamp lies within

    now - BLOCK_STAMP_BEHIND_MS_MAX  <=  stamp  <=  now + BLOCK_STAMP_AHEAD_MS_MAX

of its own clock. Correct clocks agree far better than the ahead bound, so a correct primary's
blocks always pass; a Byzantine primary can move the chain's time at most that far ahead of
the correct replicas' clocks, and only while it stays primary (the next stamp is judged again
against the clocks, not against its parent). The bound behind is looser because a proposal
may reach a replica late (retransmitted while a height stalls, or held until its parent
arrives); it still stops a primary from freezing the chain's time for long. Blocks re-proposed
by a NewView carry their first stamp and are not judged again: they were judged when first
prepared. Deriving the time from the votes (the median of vote times, as CometBFT does) would
need a time in every Commit, so in every certificate: a change of the ledger's format that
this bound makes unnecessary.
"""

from typing import Final

BLOCK_STAMP_AHEAD_MS_MAX: Final = 1_000
BLOCK_STAMP_BEHIND_MS_MAX: Final = 60_000


def stamp_in_bounds(stamp_ms: int, now_ms: int) -> bool:
    """May a new proposal stamped `stamp_ms` be prepared by a replica whose clock reads `now`?"""
    return now_ms - BLOCK_STAMP_BEHIND_MS_MAX <= stamp_ms <= now_ms + BLOCK_STAMP_AHEAD_MS_MAX

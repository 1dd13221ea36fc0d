"""What this node saw of each validator's votes and view changes (`GET /v1/votes`).

A block's certificate keeps a quorum of commit votes, not every vote: a validator absent from
it may have voted late, or not at all. The node remembers the commit votes it received and
sent for the recent heights (`VOTE_HEIGHTS_KEPT` below its head, `VOTE_HEIGHTS_AHEAD` above),
and for each validator the view changes it asked for (each a signed ViewChange message to a
higher view than its last). An answer covers a page of committed heights: at each, who voted
for the committed block (in its certificate, or a vote this node saw whose signature verifies
over that block's hash, checked when asked), so "missed" is what the node saw, not only what
the certificate kept. Heights the node did not see live (before it started, or fetched by
catch-up, or older than what it keeps) say so: their voters are the certificate's only.
Nothing is persisted: the counts are this node's since it started. Bounded in every table.
"""

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from consensus import messages
from ledger import crypto
from ledger.block import commit_payload
from ledger.genesis import Genesis
from ledger.store import BlockStore
from node import auth
from node.codec import ApiError

if TYPE_CHECKING:
    from node.runtime import Runtime

VOTE_HEIGHTS_KEPT: Final = 1024  # committed heights below the head whose votes are remembered
VOTE_HEIGHTS_AHEAD: Final = 64  # heights above the head whose votes are taken (in flight)
PRUNE_HEIGHTS: Final = 64  # heights past the bound before the old ones go, in one sweep
VOTES_PER_SENDER_MAX: Final = 4  # commit votes of one validator at one height (by view)
VOTES_PAGE_MAX: Final = 256  # heights in one answer
VOTES_PAGE_DEFAULT: Final = 64

_INT: Final = {"type": "integer", "minimum": 0}
_MAYBE_INT: Final = {"type": ["integer", "null"]}
_IDS: Final = {"type": "array", "items": {"type": "string"}}
PARAMS: Final = [
    {"name": name, "in": "query", "required": False, "schema": _INT} for name in ("from", "limit")
]
SCHEMA: Final = {  # the answer of `GET /v1/votes`, for node/openapi.py
    "type": "object",
    "required": ["from", "to", "head", "kept_from", "heights", "validators", "next_from"],
    "properties": {
        "from": _INT, "to": _INT, "head": _INT, "kept_from": _INT, "next_from": _MAYBE_INT,
        "heights": {"type": "array", "items": {"type": "object", "properties": {
            "height": _INT, "seen": {"type": "boolean"}, "signers": _IDS, "voters": _IDS}}},
        "validators": {"type": "array", "items": {"type": "object", "properties": {
            "index": _INT, "id": {"type": "string"}, "heights": _INT, "last_vote": _MAYBE_INT,
            "missed": _INT, "not_kept": _INT, "view_changes": _INT,
            "last_view_change": _MAYBE_INT}}},
    },
}  # fmt: skip
Vote = tuple[int, bytes, bytes]  # view, block hash, signature
RuntimeOf = Callable[[web.Request], "Runtime"]
OffLoop = Callable[[web.Request, Callable[[], Any]], Awaitable[web.StreamResponse]]
IntParam = Callable[[web.Request, str, int | None, int, int], int]
Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]], str]


@dataclass
class ViewChanges:
    count: int = 0
    last_view: int | None = None


class VoteLog:
    """Fed every consensus message this node receives (decoded, sender known) or sends."""

    def __init__(self, genesis: Genesis, own_index: int, head: Callable[[], int]) -> None:
        self._genesis = genesis
        self._own = own_index
        self._head = head
        self._votes: dict[int, dict[int, list[Vote]]] = {}  # height -> sender -> votes
        self._views = [ViewChanges() for _ in genesis.validators]
        self.started_at = head()  # heights up to this one were committed before it started

    def saw(self, msg: messages.Message) -> None:
        if not 0 <= msg.sender < len(self._views):
            return
        if isinstance(msg, messages.Commit):
            self._commit(msg)
        elif isinstance(msg, messages.ViewChange):
            seen = self._views[msg.sender]
            if seen.last_view is None or msg.new_view > seen.last_view:
                seen.count += 1
                seen.last_view = msg.new_view

    def _commit(self, msg: messages.Commit) -> None:
        head = self._head()
        if not head - VOTE_HEIGHTS_KEPT < msg.height <= head + VOTE_HEIGHTS_AHEAD:
            return
        by_sender = self._votes.setdefault(msg.height, {})
        votes = by_sender.setdefault(msg.sender, [])
        if len(votes) >= VOTES_PER_SENDER_MAX:  # rare: only votes that verify keep their place
            votes[:] = [v for v in votes if self._valid(msg.sender, msg.height, v, v[1])]
        if len(votes) < VOTES_PER_SENDER_MAX and all(v[0] != msg.view for v in votes):
            votes.append((msg.view, msg.block_hash, msg.signature))
        if len(self._votes) > VOTE_HEIGHTS_KEPT + VOTE_HEIGHTS_AHEAD + PRUNE_HEIGHTS:
            for height in [h for h in self._votes if h <= head - VOTE_HEIGHTS_KEPT]:
                del self._votes[height]

    def _valid(self, sender: int, height: int, vote: Vote, block_hash: bytes) -> bool:
        view, voted_hash, signature = vote
        if voted_hash != block_hash:
            return False
        payload = commit_payload(self._genesis.chain_id, view, height, block_hash)
        key = self._genesis.validators[sender].key
        return crypto.verify(key, crypto.Domain.COMMIT, payload, signature)

    def voters(self, height: int, block_hash: bytes) -> set[int]:
        """The validators whose votes for the committed block at `height` this node saw."""
        seen = self._votes.get(height, {})
        return {
            sender
            for sender, votes in list(seen.items())
            if any(self._valid(sender, height, v, block_hash) for v in list(votes))
        }

    def page(self, store: BlockStore, low: int, high: int) -> dict[str, Any]:
        """The view of heights `low` to `high` (committed ones), for `GET /v1/votes`."""
        ids = [v.id for v in self._genesis.validators]
        kept_from = max(self.started_at + 1, store.height - VOTE_HEIGHTS_KEPT + 1, 1)
        rows = list(self._rows(store, low, high, kept_from))
        validators = []
        for index, validator_id in enumerate(ids):
            live = [r for r in rows if r["seen"]]
            voted = [r["height"] for r in rows if validator_id in r["voters"]]
            validators.append({
                "index": index, "id": validator_id, "heights": len(rows),
                "last_vote": max(voted, default=None),
                "missed": sum(validator_id not in r["voters"] for r in live),
                "not_kept": sum(validator_id in r["voters"] and validator_id not in r["signers"]
                                for r in live),
                "view_changes": self._views[index].count,
                "last_view_change": self._views[index].last_view,
            })  # fmt: skip
        return {
            "from": low, "to": high, "head": store.height, "kept_from": kept_from,
            "heights": rows, "validators": validators,
            "next_from": high + 1 if high < store.height else None,
        }  # fmt: skip

    def _rows(
        self, store: BlockStore, low: int, high: int, kept_from: int
    ) -> Iterator[dict[str, Any]]:
        ids = [v.id for v in self._genesis.validators]
        for height in range(low, high + 1):
            cert = store.certificate(height)
            if cert is None:
                continue
            signers = [ids[i] for i, _ in cert.votes if i < len(ids)]
            seen = kept_from <= height and height in self._votes  # votes of it came in live
            extra = self.voters(height, cert.block_hash) if seen else set()
            voters = sorted(set(signers) | {ids[i] for i in extra}, key=ids.index)
            yield {"height": height, "seen": seen, "signers": signers, "voters": voters}


def routes(runtime_of: RuntimeOf, off_loop: OffLoop, int_param: IntParam) -> tuple[Route, ...]:
    async def get_votes(request: web.Request) -> web.StreamResponse:
        """`?from=A&limit=N`: heights A to A+N-1 (cut to the head); default the last
        `VOTES_PAGE_DEFAULT` heights."""
        rt = runtime_of(request)
        head = rt.store.height
        if head == 0:
            raise ApiError(404, "not_found", "no block is committed yet")
        limit = int_param(request, "limit", VOTES_PAGE_DEFAULT, 1, VOTES_PAGE_MAX)
        low = int_param(request, "from", max(1, head - limit + 1), 1, head)
        high = min(head, low + limit - 1)
        return await off_loop(request, lambda: rt.votes.page(rt.store, low, high))

    return (("GET", "/v1/votes", get_votes, auth.MEMBER),)

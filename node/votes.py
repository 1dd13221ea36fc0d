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
from ledger.primitives import VALIDATORS_MAX
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
VIEW_CHANGE_IDS_MAX: Final = 4 * VALIDATORS_MAX  # validators whose view changes are counted

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
Members = Callable[[int], Genesis]  # the validator set that certifies block h, by index


@dataclass
class ViewChanges:
    count: int = 0
    last_view: int | None = None


class VoteLog:
    """Fed every consensus message this node receives (decoded, sender known) or sends.

    A sender's index names a validator of one epoch's set (docs/protocol.md 20.8): `members`
    gives the set that certifies block `height` (by default the genesis's), so a vote is
    checked, and named, by the set of its height's epoch, and a view change by the set of
    the epoch in progress. View changes are counted per validator id."""

    def __init__(
        self, genesis: Genesis, own_index: int, head: Callable[[], int],
        members: Members | None = None,
    ) -> None:  # fmt: skip
        self._genesis = genesis
        self._members: Members = members or (lambda _height: genesis)
        self._own = own_index
        self._head = head
        self._votes: dict[int, dict[int, list[Vote]]] = {}  # height -> sender -> votes
        self._views: dict[str, ViewChanges] = {}  # validator id -> its view changes
        self.started_at = head()  # heights up to this one were committed before it started

    def saw(self, msg: messages.Message) -> None:
        if not 0 <= msg.sender < VALIDATORS_MAX:
            return
        if isinstance(msg, messages.Commit):
            self._commit(msg)
        elif isinstance(msg, messages.ViewChange):
            validators = self._members(self._head() + 1).validators  # the epoch in progress
            if msg.sender >= len(validators):
                return
            seen = self._view_changes(validators[msg.sender].id)
            if seen.last_view is None or msg.new_view > seen.last_view:
                seen.count += 1
                seen.last_view = msg.new_view

    def _view_changes(self, validator_id: str) -> ViewChanges:
        seen = self._views.get(validator_id)
        if seen is None:
            if len(self._views) >= VIEW_CHANGE_IDS_MAX:  # validators long gone go first
                del self._views[next(iter(self._views))]
            seen = self._views[validator_id] = ViewChanges()
        return seen

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
        validators = self._members(height).validators
        if voted_hash != block_hash or sender >= len(validators):
            return False
        payload = commit_payload(self._genesis.chain_id, view, height, block_hash)
        return crypto.verify(validators[sender].key, crypto.Domain.COMMIT, payload, signature)

    def voters(self, height: int, block_hash: bytes) -> set[int]:
        """The validators whose votes for the committed block at `height` this node saw."""
        seen = self._votes.get(height, {})
        return {
            sender
            for sender, votes in list(seen.items())
            if any(self._valid(sender, height, v, block_hash) for v in list(votes))
        }

    def page(self, store: BlockStore, low: int, high: int) -> dict[str, Any]:
        """The view of heights `low` to `high` (committed ones), for `GET /v1/votes`: each
        height named by its epoch's set; the validators of every set the page covers."""
        kept_from = max(self.started_at + 1, store.height - VOTE_HEIGHTS_KEPT + 1, 1)
        rows, sets = [], []
        for row, ids in self._rows(store, low, high, kept_from):
            rows.append(row)
            sets.append(ids)
        return {
            "from": low, "to": high, "head": store.height, "kept_from": kept_from,
            "heights": rows, "validators": self._validators(rows, sets),
            "next_from": high + 1 if high < store.height else None,
        }  # fmt: skip

    def _validators(self, rows: list[dict[str, Any]], sets: list[list[str]]) -> list[Any]:
        """Per validator of any set of the page: the latest set holding it first, by index
        there (a validator that left within the page after the ones in the last set)."""
        order: dict[str, tuple[int, int]] = {}
        for age, ids in enumerate(reversed(sets)):
            for index, validator_id in enumerate(ids):
                order.setdefault(validator_id, (age, index))
        if not sets:  # no committed height in the page: the set of the next block
            ids = [v.id for v in self._members(self._head() + 1).validators]
            order = {validator_id: (0, index) for index, validator_id in enumerate(ids)}
        out = []
        for validator_id, (_, index) in sorted(order.items(), key=lambda item: item[1]):
            member = [r for r, ids in zip(rows, sets, strict=True) if validator_id in ids]
            live = [r for r in member if r["seen"]]
            views = self._views.get(validator_id, ViewChanges())
            out.append({
                "index": index, "id": validator_id, "heights": len(member),
                "last_vote": max((r["height"] for r in member if validator_id in r["voters"]),
                                 default=None),
                "missed": sum(validator_id not in r["voters"] for r in live),
                "not_kept": sum(validator_id in r["voters"] and validator_id not in r["signers"]
                                for r in live),
                "view_changes": views.count, "last_view_change": views.last_view,
            })  # fmt: skip
        return out

    def _rows(
        self, store: BlockStore, low: int, high: int, kept_from: int
    ) -> Iterator[tuple[dict[str, Any], list[str]]]:
        for height in range(low, high + 1):
            cert = store.certificate(height)
            if cert is None:
                continue
            ids = [v.id for v in self._members(height).validators]  # the set of its epoch
            signers = [ids[i] for i, _ in cert.votes if i < len(ids)]
            seen = kept_from <= height and height in self._votes  # votes of it came in live
            extra = self.voters(height, cert.block_hash) if seen else set()
            voters = sorted(set(signers) | {ids[i] for i in extra if i < len(ids)}, key=ids.index)
            row = {"height": height, "seen": seen, "signers": signers, "voters": voters}
            yield row, ids


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

"""Routes of governance: the configuration in force, and the proposals (docs/protocol.md 20).

`GET /v1/config?height=H` is the configuration in force after block H (default: the head),
derived from the genesis and the change log of the store's rule state (ledger/gov/history.py);
`GET /v1/governance/proposals[/{id}]` lists the proposals (pending only, unless `?all=true`)
with their status as of the head. Every identity reads them: an admin is asked to approve
what it reads here, a clerk learns who may write what. `GET /v1/config/proof` (anyone, before
it trusts the node) carries the certified governance txs from which a client derives the
configuration in force from the genesis alone. Reads run off the event loop.
"""

from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from ledger import tx as txs
from ledger.block import HEIGHT_MAX
from ledger.genesis import is_identifier
from ledger.gov import history, machine
from node import auth, proofs
from node.codec import ApiError
from node.runtime import Runtime

PROPOSALS_MAX: Final = 1000  # proposals in one answer (`truncated` says if there are more)
PROPOSALS_PREFIX: Final = machine.proposal_key("")

RuntimeOf = Callable[[web.Request], Runtime]
OffLoop = Callable[[web.Request, Callable[[], Any]], Awaitable[web.StreamResponse]]


def routes(
    runtime_of: RuntimeOf, off_loop: OffLoop
) -> tuple[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]], str], ...]:
    async def get_config(request: web.Request) -> web.StreamResponse:
        rt = runtime_of(request)
        text = request.query.get("height")
        if text is not None and not (text.isascii() and text.isdigit() and len(text) <= 19):
            raise ApiError(400, txs.MALFORMED, "height: a block height (a whole number)")
        asked = None if text is None else int(text)
        if asked is not None and asked > HEIGHT_MAX:
            raise ApiError(400, txs.MALFORMED, f"height: at most {HEIGHT_MAX}")

        def read() -> dict[str, Any]:
            head = rt.store.height
            height = head if asked is None else asked
            if height > head:
                raise ApiError(404, "not_found", f"height {height} is above the head {head}")
            configs = history.configs_for(rt.identity.genesis)
            return configs.at_height(rt.store.rule_state, height).to_json(height)

        return await off_loop(request, read)

    async def get_proposals(request: web.Request) -> web.StreamResponse:
        rt = runtime_of(request)
        every = request.query.get("all", "false")
        if every not in ("true", "false"):
            raise ApiError(400, txs.MALFORMED, "all: true or false")

        def read() -> dict[str, Any]:
            head = rt.store.height
            config = rt.configuration()
            found = rt.store.rule_states(PROPOSALS_PREFIX, PROPOSALS_MAX + 1)
            views = [
                machine.Proposal.from_list(k[len(PROPOSALS_PREFIX) :].decode(), v).to_json(
                    head, config
                )
                for k, v in found[:PROPOSALS_MAX]
            ]
            if every == "false":
                views = [v for v in views if v["status"] == machine.PENDING]
            return {"proposals": views, "truncated": len(found) > PROPOSALS_MAX}

        return await off_loop(request, read)

    async def get_proposal(request: web.Request) -> web.StreamResponse:
        rt = runtime_of(request)
        proposal_id = request.match_info["id"]
        if not is_identifier(proposal_id):
            raise ApiError(400, txs.MALFORMED, "a proposal id is a lowercase identifier")

        def read() -> dict[str, Any]:
            found = machine.read_proposal(rt.store.rule_state, proposal_id)
            if found is None:
                raise ApiError(404, "not_found", f"no proposal {proposal_id!r}")
            return found.to_json(rt.store.height, rt.configuration())

        return await off_loop(request, read)

    async def get_config_proof(request: web.Request) -> web.StreamResponse:
        rt = runtime_of(request)

        def read() -> dict[str, Any]:
            try:
                return proofs.config_proof(rt.store)
            except proofs.TooMuchGovernance as exc:
                raise ApiError(422, txs.TOO_LARGE, str(exc)) from None

        return await off_loop(request, read)

    return (
        ("GET", "/v1/config", get_config, auth.MEMBER),
        # Anyone, before trusting the node: a client learns from it whom to trust (14.6).
        ("GET", "/v1/config/proof", get_config_proof, auth.OPEN),
        ("GET", "/v1/governance/proposals", get_proposals, auth.MEMBER),
        ("GET", "/v1/governance/proposals/{id}", get_proposal, auth.MEMBER),
    )

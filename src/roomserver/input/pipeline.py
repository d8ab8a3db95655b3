"""One event through gather ► decide ► commit (``InputProcessor`` brackets it with parsing,
verification and publishing).

    auth events (gather) ► against_auth_events (decide) ► prev events, the state before,
    filling a gap when the auth events passed (gather) ► the entries the rules read (gather)
    ► against_state_before (decide) ► current state's entries, when a soft-fail check applies
    (gather) ► soft_fail_reason (decide) ► for an event that moves the room on, what its
    extremities depend on (gather) ► decide ► the write (effects) ► commit

Each check is decided once by ``core.decide`` over what was gathered before it; what is
gathered next depends only on those answers. Values flow from one step to the next; nothing
is shared and updated between them.
"""

from __future__ import annotations

from roomserver.api import EventResult
from roomserver.core.decide import (
    EventFacts,
    against_auth_events,
    against_state_before,
    decide,
    needs_soft_fail_check,
    soft_fail_reason,
    updates_room,
)
from roomserver.core.ids import EventId
from roomserver.input.checks import history_visibility
from roomserver.input.commit import Commit
from roomserver.input.effects import Effects
from roomserver.input.fetch import FetchMissing, LazyServers
from roomserver.input.gather import Gatherer, view_of
from roomserver.input.job import Job
from roomserver.input.missing import Budget
from roomserver.input.store import Prefetched
from roomserver.ports import RoomInfo

_NOTHING: frozenset[EventId] = frozenset()


class EventPipeline:
    def __init__(
        self, gather: Gatherer, effects: Effects, commit: Commit, fetch: FetchMissing
    ) -> None:
        self._gather = gather
        self._effects = effects
        self._commit = commit
        self._fetch = fetch
        fetch.process_with(self.handle)  # fetched events go through the same steps

    async def handle(
        self,
        job: Job,
        budget: Budget,
        room: RoomInfo | None,
        prefetched: Prefetched | None = None,
    ) -> tuple[EventResult, int]:
        """Gather, decide, commit one event; returns its result and how many outputs it queued.

        Each check is decided once (``core.decide``) over what was gathered before it; what
        is gathered next depends only on those answers."""
        event, role, gather = job.event, job.role, self._gather
        writes_before = budget.writes
        servers = LazyServers(self._fetch, job, room)
        auth = await gather.auth_events(job, servers, budget)
        rejection = against_auth_events(
            event, auth.events, rejected=auth.rejected, missing=auth.missing
        )
        gathered = await gather.state_before(job, room, servers, budget, fill_gap=rejection is None)
        needed = await gather.needed_state(job, gathered.state)
        rejection = against_state_before(
            event,
            needed if gathered.state is not None else None,
            role=role,
            prior=rejection,
            prev_in_other_room=gathered.prev_in_other_room,
            missing_prevs=gathered.missing_prevs,
        )
        soft_fail = None
        if needs_soft_fail_check(
            event, role=role, rejection=rejection, rewrites_state=job.rewrites_state
        ):
            soft_fail = soft_fail_reason(event, await gather.current_for_soft_fail(event, gathered))
        if budget.writes != writes_before:
            prefetched = None  # a gap filled or an auth chain stored since it was read
        state_known = gathered.state is not None
        if updates_room(role, rejection, soft_fail, state_known=state_known):
            view, superseded, cited = await gather.room_facts(job, gathered, prefetched)
        else:
            view, superseded, cited = view_of(gathered.room), _NOTHING, _NOTHING
        facts = EventFacts(
            event, role, state_known, rejection, soft_fail, job.rewrites_state, superseded, cited
        )
        decision = decide(view, facts)
        planned = await self._effects.plan(
            job,
            decision,
            gathered,
            history_visibility=history_visibility(needed),
            prefetched=prefetched,
        )
        committed = await self._commit.commit(planned, gathered.room)
        budget.writes += 1
        return committed

"""FederationFetcher against real HTTP fake remotes: auth chains, gaps, state, faults."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest

from roomserver.core.acl import acl_predicate
from roomserver.core.errors import InvalidEvent, InvalidSignature
from roomserver.core.pdu import Event
from roomserver.federation.errors import (
    MissingDataTimeout,
    NoServerSucceeded,
    RemoteTimeout,
    RemoteUnavailable,
    ResponseTooLarge,
)
from roomserver.testing.builder import RoomBuilder
from tests.federation.conftest import StartRemote
from tests.federation.helpers import federation_stack, remote_room

BOGUS_SIG = "A" * 86


def _assert_topological(events: list[Event], attr: str) -> None:
    position = {e.event_id: i for i, e in enumerate(events)}
    for event in events:
        for parent in getattr(event, attr):
            if parent in position:
                assert position[parent] < position[event.event_id]


def _bad_signatures(pdu: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(pdu)
    out["signatures"] = {s: {k: BOGUS_SIG for k in v} for s, v in out["signatures"].items()}
    return out


async def test_auth_chain_of_event_whose_auth_events_are_all_unknown(
    remotes: StartRemote,
) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote)
    builder.member(f"@alice:{remote.server_name}", f"@carol:{remote.server_name}", "invite")
    builder.join(f"@carol:{remote.server_name}")
    event = builder.message(f"@carol:{remote.server_name}", "hi")
    room = remote.add_room(builder)
    async with federation_stack(remote) as net:
        chain = await net.fetcher.fetch_auth_chain(
            builder.room_id, "10", event.event_id, [remote.server_name]
        )
    assert {e.event_id for e in chain} == set(room.auth_chain([event.event_id]))
    assert set(event.auth_event_ids) <= {e.event_id for e in chain}
    assert chain[0].type == "m.room.create"
    _assert_topological(chain, "auth_event_ids")
    assert remote.count("event_auth") == 1
    assert remote.auth_failures == []


async def test_gap_of_50_prev_events_is_paged_20_at_a_time(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote, messages=1)
    known_tip = builder.latest[0]
    gap = [builder.message(f"@alice:{remote.server_name}", f"m{i}") for i in range(50)]
    new_event = builder.message(f"@bob:{remote.server_name}", "after the gap")
    remote.add_room(builder)
    async with federation_stack(remote) as net:
        result = await net.fetcher.get_missing_events(
            builder.room_id,
            "10",
            [known_tip],
            [new_event.event_id],
            limit=100,
            servers=[remote.server_name],
        )
    assert [e.event_id for e in result.events] == [e.event_id for e in gap]
    assert result.unresolved_prev_ids == ()
    bodies = [r.body for r in remote.requests if r.endpoint == "get_missing_events"]
    assert len(bodies) == 3
    assert all(b["limit"] <= 20 for b in bodies)
    assert bodies[0]["latest_events"] == [new_event.event_id]


async def test_gap_stops_at_limit_and_reports_unresolved_prevs(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote, messages=1)
    known_tip = builder.latest[0]
    gap = [builder.message(f"@alice:{remote.server_name}", f"m{i}") for i in range(50)]
    new_event = builder.message(f"@bob:{remote.server_name}", "after the gap")
    remote.add_room(builder)
    async with federation_stack(remote) as net:
        result = await net.fetcher.get_missing_events(
            builder.room_id,
            "10",
            [known_tip],
            [new_event.event_id],
            limit=30,
            servers=[remote.server_name],
        )
    assert [e.event_id for e in result.events] == [e.event_id for e in gap[20:]]
    assert result.unresolved_prev_ids == (gap[19].event_id,)


async def test_gap_edge_state_from_state_ids_and_event(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote, messages=2)
    builder.send("m.room.topic", f"@alice:{remote.server_name}", {"topic": "t"}, state_key="")
    builder.join(f"@carol:{remote.server_name}")
    edge = builder.message(f"@carol:{remote.server_name}", "edge")
    room = remote.add_room(builder)
    expected_state = room.state_before[edge.event_id]
    # We hold everything but the two newest state events: few are missing, so /event is used.
    lacking = {
        expected_state[("m.room.topic", "")],
        expected_state[("m.room.member", "@carol:remote.test")],
    }
    have = set(builder.events) - lacking
    async with federation_stack(remote) as net:
        state = await net.fetcher.state_ids(
            builder.room_id, "10", edge.event_id, [remote.server_name], have=have
        )
    assert set(state.state_event_ids) == set(expected_state.values())
    assert {e.event_id for e in state.events} == lacking
    assert state.missing_event_ids == ()
    assert remote.count("state_ids") == 1
    assert remote.count("event") == 2
    assert remote.count("state") == 0


async def test_gap_edge_state_from_state_when_most_is_missing(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote, messages=1)
    for i in range(8):
        builder.join(f"@user{i}:{remote.server_name}")
    edge = builder.message(f"@alice:{remote.server_name}", "edge")
    room = remote.add_room(builder)
    expected_state = room.state_before[edge.event_id]

    async def have(event_ids: Any) -> set[str]:
        return set()

    async with federation_stack(remote) as net:
        state = await net.fetcher.state_ids(
            builder.room_id, "10", edge.event_id, [remote.server_name], have=have
        )
    assert set(state.state_event_ids) == set(expected_state.values())
    fetched = {e.event_id: e for e in state.events}
    assert set(expected_state.values()) <= fetched.keys()
    assert {fetched[e].state_tuple: e for e in expected_state.values()} == expected_state
    _assert_topological(list(state.events), "auth_event_ids")
    assert remote.count("state") == 1
    assert remote.count("event") == 0


async def test_remote_that_times_out(remotes: StartRemote) -> None:
    remote = await remotes("slow.test")
    builder = remote_room(remote)
    remote.add_room(builder)
    remote.delay = 5.0
    target = builder.latest[0]
    options = {"request_timeout": 0.3}
    async with federation_stack(remote, request_timeout=0.3, fetcher_options=options) as net:
        with pytest.raises(NoServerSucceeded) as caught:
            await net.fetcher.fetch_event(builder.room_id, "10", target, [remote.server_name])
        assert isinstance(caught.value.errors["slow.test"], RemoteTimeout)
        # The dead server is backed off: the next attempt does not reach it.
        before = len(remote.requests)
        with pytest.raises(NoServerSucceeded) as caught:
            await net.fetcher.fetch_event(builder.room_id, "10", target, [remote.server_name])
        assert isinstance(caught.value.errors["slow.test"], RemoteUnavailable)
        assert len(remote.requests) == before


async def test_overall_deadline_raises_missing_data_timeout(remotes: StartRemote) -> None:
    first, second = await remotes("slow1.test"), await remotes("slow2.test")
    builder = remote_room(first)
    for remote in (first, second):
        remote.add_room(builder)
        remote.delay = 5.0
    options = {"max_missing_processing_time": 0.4}
    async with federation_stack(first, second, fetcher_options=options) as net:
        started = time.monotonic()
        with pytest.raises(MissingDataTimeout):
            await net.fetcher.state_ids(
                builder.room_id, "10", builder.latest[0], ["slow1.test", "slow2.test"]
            )
        assert time.monotonic() - started < 2.0
    assert second.count("state_ids") == 0


async def test_bad_signatures_are_refused_and_the_next_server_asked(
    remotes: StartRemote,
) -> None:
    liar, honest = await remotes("liar.test"), await remotes("honest.test")
    builder = remote_room(liar)
    liar.add_room(builder)
    honest.add_room(builder)
    liar.notarise(liar)
    honest.notarise(liar)

    def forge(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        key = {"event": "pdus", "event_auth": "auth_chain", "get_missing_events": "events"}
        if endpoint in key:
            body = {**body, key[endpoint]: [_bad_signatures(p) for p in body[key[endpoint]]]}
        return body

    liar.tamper = forge
    target = builder.latest[0]
    async with federation_stack(liar, honest) as net:
        with pytest.raises(NoServerSucceeded) as caught:
            await net.fetcher.fetch_event(builder.room_id, "10", target, ["liar.test"])
        assert isinstance(caught.value.errors["liar.test"], InvalidSignature)
        event = await net.fetcher.fetch_event(
            builder.room_id, "10", target, ["liar.test", "honest.test"]
        )
        assert event.event_id == target
        chain = await net.fetcher.fetch_auth_chain(
            builder.room_id, "10", target, ["liar.test", "honest.test"]
        )
    # The liar's chain verified nothing, so the honest server's chain completed it.
    assert {e.event_id for e in chain} == set(honest.rooms[builder.room_id].auth_chain([target]))
    assert honest.count("event_auth") == 1


async def test_events_of_another_room_are_refused(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    ours = remote_room(remote)
    other = RoomBuilder("10", server_name=remote.server_name, keys=remote.builder_keys())
    other.create_room(f"@alice:{remote.server_name}")
    stray = other.message(f"@alice:{remote.server_name}", "elsewhere")
    remote.add_room(ours)
    remote.add_room(other)

    def mix(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        if endpoint == "get_missing_events":
            body = {**body, "events": [*body["events"], dict(stray.pdu)]}
        return body

    remote.tamper = mix
    async with federation_stack(remote) as net:
        with pytest.raises(NoServerSucceeded) as caught:
            await net.fetcher.fetch_event(ours.room_id, "10", stray.event_id, [remote.server_name])
        error = caught.value.errors["remote.test"]
        assert isinstance(error, InvalidEvent) and error.field == "room_id"
        tip = ours.latest[0]
        result = await net.fetcher.get_missing_events(
            ours.room_id,
            "10",
            [ours.events[ours.latest[0]].prev_event_ids[0]],
            [tip],
            servers=[remote.server_name],
        )
    assert stray.event_id not in {e.event_id for e in result.events}
    assert all(e.room_id == ours.room_id for e in result.events)


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_bodies_are_refused(remotes: StartRemote, chunked: bool) -> None:
    remote = await remotes("big.test")
    builder = remote_room(remote)
    remote.add_room(builder)
    remote.pad_bytes = 300_000
    remote.chunked = chunked
    async with federation_stack(remote, max_response_bytes=100_000) as net:
        with pytest.raises(NoServerSucceeded) as caught:
            await net.fetcher.fetch_event(
                builder.room_id, "10", builder.latest[0], [remote.server_name]
            )
    assert isinstance(caught.value.errors["big.test"], ResponseTooLarge)


async def test_content_hash_mismatch_yields_the_redacted_event(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote)
    remote.add_room(builder)
    target = builder.latest[0]

    def edit(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        pdu = copy.deepcopy(body["pdus"][0])
        pdu["content"]["body"] = "edited in transit"
        return {**body, "pdus": [pdu]}

    remote.tamper = edit
    async with federation_stack(remote) as net:
        event = await net.fetcher.fetch_event(builder.room_id, "10", target, ["remote.test"])
    assert event.event_id == target
    assert dict(event.content) == {}


async def test_server_denied_by_acl_is_never_asked(remotes: StartRemote) -> None:
    denied, allowed = await remotes("evil.test"), await remotes("good.test")
    builder = remote_room(denied)
    denied.add_room(builder)
    allowed.add_room(builder)
    allowed.notarise(denied)
    acl = acl_predicate({"allow": ["*"], "deny": ["evil.test"]})
    async with federation_stack(denied, allowed, notaries=()) as net:
        net.keyring.add_verify_key("evil.test", denied.key_id, denied.verify_key)
        # What the input pipeline asks (its server list honours the ACL: tests/input).
        servers = [s for s in ("evil.test", "good.test") if acl(s)]
        assert servers == ["good.test"]
        event = await net.fetcher.fetch_event(builder.room_id, "10", builder.latest[0], servers)
    assert event.event_id == builder.latest[0]
    assert denied.requests == []


async def test_first_of_two_remotes_fails(remotes: StartRemote) -> None:
    broken, working = await remotes("broken.test"), await remotes("working.test")
    builder = remote_room(working)
    broken.add_room(builder)
    working.add_room(builder)
    broken.fail_status = 500
    edge = builder.latest[0]
    async with federation_stack(broken, working) as net:
        servers = ["broken.test", "working.test"]
        state = await net.fetcher.state_ids(builder.room_id, "10", edge, servers)
        event = await net.fetcher.fetch_event(builder.room_id, "10", edge, servers)
    assert state.server == "working.test"
    assert set(state.state_event_ids) == set(
        working.rooms[builder.room_id].state_before[edge].values()
    )
    assert event.event_id == edge
    # broken.test failed once and was then backed off, not asked again.
    assert len(broken.requests) == 1


async def test_slow_remote_does_not_block_other_fetches(remotes: StartRemote) -> None:
    slow, fast = await remotes("slow.test"), await remotes("fast.test")
    slow_room = remote_room(slow)
    fast_room = remote_room(fast)
    slow.add_room(slow_room)
    fast.add_room(fast_room)
    async with federation_stack(slow, fast) as net:
        # Keys first, so the slow fetch waits on the event itself.
        net.keyring.add_verify_key("slow.test", slow.key_id, slow.verify_key)
        slow.delay = 1.5
        slow_task = asyncio.create_task(
            net.fetcher.fetch_event(slow_room.room_id, "10", slow_room.latest[0], ["slow.test"])
        )
        await asyncio.sleep(0.05)
        started = time.monotonic()
        done = await asyncio.gather(
            *(
                net.fetcher.fetch_auth_chain(fast_room.room_id, "10", e, ["fast.test"])
                for e in list(fast_room.events)[-3:]
            )
        )
        fast_elapsed = time.monotonic() - started
        assert not slow_task.done()
        assert all(done)
        assert fast_elapsed < 1.0
        slow_event = await slow_task
    assert slow_event.event_id == slow_room.latest[0]


async def test_backfill_returns_verified_events_oldest_first(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote, messages=10)
    remote.add_room(builder)
    tip = builder.latest[0]
    async with federation_stack(remote) as net:
        events = await net.fetcher.backfill(
            builder.room_id, "10", [tip], limit=5, servers=["remote.test"]
        )
    assert [e.event_id for e in events] == list(builder.events)[-5:]


@pytest.mark.parametrize("version", ["1", "3", "5", "12"])
async def test_room_versions_round_trip(remotes: StartRemote, version: str) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote, version=version, messages=4)
    room = remote.add_room(builder)
    edge = builder.latest[0]
    async with federation_stack(remote) as net:
        event = await net.fetcher.fetch_event(builder.room_id, version, edge, ["remote.test"])
        chain = await net.fetcher.fetch_auth_chain(builder.room_id, version, edge, ["remote.test"])
        state = await net.fetcher.state_ids(builder.room_id, version, edge, ["remote.test"])
    assert event.event_id == edge and event.room_id == builder.room_id
    assert {e.event_id for e in chain} == set(room.auth_chain([edge]))
    assert {e.event_id for e in state.events} == set(room.state_before[edge].values()) | set(
        room.auth_chain(room.state_before[edge].values())
    )

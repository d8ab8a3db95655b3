"""The ``m.room.member`` authorization rules (v12 rule 5, v6-v11 rule 4, v1-v5 rule 5).

One function per membership. Every path ends in an allow (``return``) or a ``Rejected`` citing
the rule's number in the event's room version. ``state`` is whatever the event is checked
against: its auth events, the state before it, or the current state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from roomserver.core.auth.numbering import reject
from roomserver.core.auth.power import (
    JOIN_RULES_KEY,
    POWER_LEVELS_KEY,
    PowerLevel,
    StateKey,
    membership_of,
    named_level,
    user_power_level,
)
from roomserver.core.auth.third_party_invite import signed_block_verifies
from roomserver.core.identifiers import is_valid_user_id, server_name_of
from roomserver.core.pdu import Event

_INVITED_OR_JOINED = ("invite", "join")


def join_rule_of(state: Mapping[StateKey, Event]) -> str:
    """``content.join_rule`` of the join rules event.

    Without a join rules event (or without ``join_rule``) the room counts as invite-only, as
    the other implementations do; the spec leaves it open. A non-string value matches no rule.
    """
    event = state.get(JOIN_RULES_KEY)
    if event is None:
        return "invite"
    value = event.content.get("join_rule", "invite")
    return value if isinstance(value, str) else ""


def _power(user: str, state: Mapping[StateKey, Event], create: Event) -> PowerLevel:
    return user_power_level(
        user, power_levels=state.get(POWER_LEVELS_KEY), create=create, rules=create.rules
    )


def check_member_event(event: Event, state: Mapping[StateKey, Event], create: Event) -> None:
    """Rule "m.room.member": malformed, authorising signature, then by ``membership``.

    Malformed also covers a state key that is not a user ID (the spec's schema makes it the
    target user's ID; the rules read it as one; ruma rejects it the same way). The historical
    user ID grammar applies, as for ``sender``.
    """
    rules = event.rules
    content = event.content
    target = event.state_key
    if target is None or "membership" not in content:
        raise reject(rules, "member.malformed", "m.room.member: no state_key or no membership")
    if not is_valid_user_id(target):
        raise reject(rules, "member.malformed", "m.room.member: state_key is not a user ID")
    if rules.restricted_joins and "join_authorised_via_users_server" in content:
        check_authorising_server_signed(event)
    membership = content["membership"]
    if membership == "join":
        check_join(event, target, state, create)
    elif membership == "invite":
        check_invite(event, target, state, create)
    elif membership == "leave":
        check_leave(event, target, state, create)
    elif membership == "ban":
        check_ban(event, target, state, create)
    elif membership == "knock" and rules.knocking:
        check_knock(event, target, state)
    else:
        raise reject(rules, "member.unknown", f"m.room.member: unknown membership {membership!r}")


def check_authorising_server_signed(event: Event) -> None:
    """v8+: with ``join_authorised_via_users_server``, that user's server must have signed.

    Signature verification (``signatures.verify_event``) checks every signature the event
    carries; here the authorising user must be a user ID whose server is among the signers.
    """
    authoriser = event.content.get("join_authorised_via_users_server")
    signers = event.pdu.get("signatures")
    if (
        not isinstance(authoriser, str)
        or not is_valid_user_id(authoriser)
        or not isinstance(signers, Mapping)
        or not signers.get(server_name_of(authoriser))
    ):
        raise reject(
            event.rules,
            "member.authorising_signature",
            "m.room.member: not signed by the server of join_authorised_via_users_server",
        )


def _initial_creator(create: Event) -> Any:
    """Who may join straight after the create event: ``content.creator`` up to v10, else sender."""
    if create.rules.creator_in_content:
        return create.content.get("creator")
    return create.sender


def check_join(event: Event, target: str, state: Mapping[StateKey, Event], create: Event) -> None:
    """``membership == join``: initial creator join, banned, join rules (incl. restricted)."""
    rules = event.rules
    prevs = event.prev_event_ids
    # "The only previous event": the PDU's list as sent, as the peers count it. Parsing keeps one
    # of each repeated prev event, so [create, create] would otherwise pass for [create].
    cited = event.pdu.get("prev_events")
    only_create = isinstance(cited, list) and len(cited) == 1 and prevs == (create.event_id,)
    if only_create and target == _initial_creator(create):
        return
    sender = event.sender
    if sender != target:
        raise reject(rules, "join.sender_not_target", "m.room.member: join for another user")
    current = membership_of(sender, state)
    if current == "ban":
        raise reject(rules, "join.banned", "m.room.member: sender is banned")
    join_rule = join_rule_of(state)
    if join_rule == "invite" or (join_rule == "knock" and rules.knocking):
        if current in _INVITED_OR_JOINED:
            return
        raise reject(
            rules,
            "join.invite_rule",
            f"m.room.member: join rule is {join_rule!r} and the sender is not invited",
        )
    if (join_rule == "restricted" and rules.restricted_joins) or (
        join_rule == "knock_restricted" and rules.knock_restricted_joins
    ):
        if current in _INVITED_OR_JOINED:
            return
        check_restricted_join_authoriser(event, state, create)
        return
    if join_rule == "public":
        return
    raise reject(rules, "join.otherwise", f"m.room.member: cannot join under {join_rule!r}")


def check_restricted_join_authoriser(
    event: Event, state: Mapping[StateKey, Event], create: Event
) -> None:
    """Restricted join: the authorising user must be joined and able to invite."""
    authoriser = event.content.get("join_authorised_via_users_server")
    rules = event.rules
    if not isinstance(authoriser, str):
        raise reject(
            rules,
            "join.restricted_authoriser",
            "m.room.member: restricted join without join_authorised_via_users_server",
        )
    if membership_of(authoriser, state) != "join":
        raise reject(
            rules, "join.restricted_authoriser", "m.room.member: authorising user is not joined"
        )
    invite_level = named_level(state.get(POWER_LEVELS_KEY), "invite", rules)
    if _power(authoriser, state, create) < invite_level:
        raise reject(
            rules,
            "join.restricted_authoriser",
            "m.room.member: authorising user lacks the invite power level",
        )


def check_invite(event: Event, target: str, state: Mapping[StateKey, Event], create: Event) -> None:
    """``membership == invite``: third-party invites, then sender joined, target, invite level."""
    rules = event.rules
    if "third_party_invite" in event.content:
        check_third_party_invite(event, target, state)
        return
    if membership_of(event.sender, state) != "join":
        raise reject(rules, "invite.sender_not_joined", "m.room.member: inviter is not joined")
    if membership_of(target, state) in ("join", "ban"):
        raise reject(
            rules,
            "invite.target_joined_or_banned",
            "m.room.member: invitee is already joined or banned",
        )
    invite_level = named_level(state.get(POWER_LEVELS_KEY), "invite", rules)
    if _power(event.sender, state, create) >= invite_level:
        return
    raise reject(rules, "invite.power", "m.room.member: inviter lacks the invite power level")


def check_third_party_invite(event: Event, target: str, state: Mapping[StateKey, Event]) -> None:
    """An invite with ``content.third_party_invite``: the signed block must match the invite."""
    rules = event.rules

    def fail(rule: str, message: str) -> NoReturn:
        raise reject(rules, f"invite.third_party.{rule}", f"m.room.member: {message}")

    if membership_of(target, state) == "ban":
        fail("target_banned", "third-party invitee is banned")
    third_party = event.content["third_party_invite"]
    signed = third_party.get("signed") if isinstance(third_party, Mapping) else None
    if not isinstance(signed, Mapping):
        fail("no_signed", "third_party_invite has no signed object")
    mxid = signed.get("mxid")
    token = signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        fail("signed_fields", "third_party_invite.signed lacks mxid or token")
    if mxid != target:
        fail("mxid_mismatch", "third_party_invite.signed.mxid is not the state_key")
    invite_event = state.get(("m.room.third_party_invite", token))
    if invite_event is None:
        fail("no_invite_event", "no m.room.third_party_invite event for the token")
    if invite_event.sender != event.sender:
        fail("sender_mismatch", "sender did not send the m.room.third_party_invite")
    if signed_block_verifies(signed, invite_event):
        return
    fail("signature", "no signature on third_party_invite.signed verifies")


def check_leave(event: Event, target: str, state: Mapping[StateKey, Event], create: Event) -> None:
    """``membership == leave``: leaving, rejecting or rescinding; kicks and unbans."""
    rules = event.rules
    sender = event.sender
    if sender == target:
        current = membership_of(sender, state)
        if current in _INVITED_OR_JOINED or (current == "knock" and rules.knocking):
            return
        raise reject(rules, "leave.self", f"m.room.member: cannot leave from {current!r}")
    if membership_of(sender, state) != "join":
        raise reject(rules, "leave.sender_not_joined", "m.room.member: kicker is not joined")
    power_levels = state.get(POWER_LEVELS_KEY)
    sender_level = _power(sender, state, create)
    if membership_of(target, state) == "ban" and sender_level < named_level(
        power_levels, "ban", rules
    ):
        raise reject(rules, "leave.unban_power", "m.room.member: unban needs the ban level")
    if sender_level >= named_level(power_levels, "kick", rules) and (
        _power(target, state, create) < sender_level
    ):
        return
    raise reject(
        rules,
        "leave.kick_power",
        "m.room.member: kick needs the kick level and more power than the target",
    )


def check_ban(event: Event, target: str, state: Mapping[StateKey, Event], create: Event) -> None:
    """``membership == ban``: sender joined, ban level, more power than the target."""
    rules = event.rules
    sender = event.sender
    if membership_of(sender, state) != "join":
        raise reject(rules, "ban.sender_not_joined", "m.room.member: banner is not joined")
    sender_level = _power(sender, state, create)
    ban_level = named_level(state.get(POWER_LEVELS_KEY), "ban", rules)
    if sender_level >= ban_level and _power(target, state, create) < sender_level:
        return
    raise reject(
        rules,
        "ban.power",
        "m.room.member: ban needs the ban level and more power than the target",
    )


def check_knock(event: Event, target: str, state: Mapping[StateKey, Event]) -> None:
    """``membership == knock`` (v7+): only under a knock join rule, only for oneself."""
    rules = event.rules
    join_rule = join_rule_of(state)
    if not (
        join_rule == "knock" or (join_rule == "knock_restricted" and rules.knock_restricted_joins)
    ):
        raise reject(rules, "knock.join_rule", f"m.room.member: cannot knock under {join_rule!r}")
    if event.sender != target:
        raise reject(rules, "knock.sender_not_target", "m.room.member: knock for another user")
    if membership_of(target, state) not in ("ban", "invite", "join"):
        return
    raise reject(
        rules, "knock.membership", "m.room.member: cannot knock while banned, invited or joined"
    )

"""The authorization rules against a given state (spec: room versions, "Authorization rules").

``check_auth_rules`` runs the rules in the spec's order over a mapping ``(type, state_key) ->
Event``: the event's own auth events, the state before it, or the room's current state (the
caller chooses; see ``check_soft_fail`` for the last). One function per rule; each rejection
cites the rule's number in the event's room version. The checks on the auth event list itself
(duplicates, unexpected or rejected entries) live in ``roomserver.core.auth.auth_events``.
"""

from __future__ import annotations

from collections.abc import Mapping

from roomserver.core.auth.membership import check_member_event
from roomserver.core.auth.numbering import reject
from roomserver.core.auth.power import (
    CREATE_KEY,
    POWER_LEVELS_KEY,
    PowerLevel,
    StateKey,
    membership_of,
    named_level,
    required_power_level,
    user_power_level,
)
from roomserver.core.auth.power_levels_event import check_power_levels_event
from roomserver.core.errors import Rejected, SoftFailed
from roomserver.core.hashes import room_id_from_create_event_id
from roomserver.core.identifiers import is_valid_user_id, server_name_of
from roomserver.core.pdu import Event, is_create_event
from roomserver.core.room_versions import KNOWN_ROOM_VERSIONS


def check_auth_rules(event: Event, auth_events: Mapping[StateKey, Event]) -> None:
    """Raise ``Rejected`` unless ``event`` passes the rules of its room version against
    ``auth_events`` (a state: only the keys the rules need are looked up).

    In room version 12 the create event must be in the mapping under ``("m.room.create", "")``
    even though events do not cite it. Entries must not be rejected events.
    """
    if event.type == "m.room.create":
        check_create_event(event)
        return
    create = find_create_event(event, auth_events)
    check_federation_allowed(event, create)
    rules = event.rules
    event_type = event.type
    if event_type == "m.room.aliases" and rules.aliases_rule:
        check_aliases_event(event)
        return
    if event_type == "m.room.member":
        check_member_event(event, auth_events, create)
        return
    check_sender_joined(event, auth_events)
    power_levels = auth_events.get(POWER_LEVELS_KEY)
    sender_level = user_power_level(
        event.sender, power_levels=power_levels, create=create, rules=rules
    )
    if event_type == "m.room.third_party_invite":
        check_third_party_invite_event(event, power_levels, sender_level)
        return
    check_required_power_level(event, power_levels, sender_level)
    check_state_key_user(event)
    if event_type == "m.room.power_levels":
        check_power_levels_event(event, auth_events, create)
    if event_type == "m.room.redaction" and rules.redaction_auth_rule:
        check_redaction_event(event, power_levels, sender_level)


def check_soft_fail(event: Event, current_state: Mapping[StateKey, Event]) -> None:
    """The rules against the room's current state: raise ``SoftFailed`` instead of rejecting."""
    try:
        check_auth_rules(event, current_state)
    except Rejected as exc:
        raise SoftFailed(exc.reason) from None


def check_create_event(event: Event) -> None:
    """Rule 1, ``m.room.create``: the empty state key, no prev events, room ID, room version,
    creator(s).

    The state key check is ours: the spec defines the create event as the state event with the
    empty state key but lists no rule for other state keys. Without it, an ``m.room.create``
    event with no state key, or another one, would pass as a second "create event" (as in
    gomatrixserverlib, which rejects it the same way).
    """
    rules = event.rules
    if event.state_key != "":
        raise reject(rules, "create.state_key", "m.room.create: state_key must be the empty string")
    if event.prev_event_ids:
        raise reject(rules, "create.prev_events", "m.room.create: has prev_events")
    if rules.room_id_from_create_event:
        if "room_id" in event.pdu:
            raise reject(rules, "create.room_id", "m.room.create: has a room_id")
    elif server_name_of(event.room_id) != server_name_of(event.sender):
        raise reject(
            rules, "create.room_id", "m.room.create: room_id and sender are on different servers"
        )
    content = event.content
    if "room_version" in content:
        version = content["room_version"]
        if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
            raise reject(
                rules, "create.room_version", f"m.room.create: unknown room_version {version!r}"
            )
    if rules.additional_creators and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise reject(
                rules,
                "create.additional_creators",
                "m.room.create: additional_creators is not a list of user IDs",
            )
    if rules.creator_in_content and "creator" not in content:
        raise reject(rules, "create.creator", "m.room.create: no creator")


def find_create_event(event: Event, auth_events: Mapping[StateKey, Event]) -> Event:
    """The room's create event from ``auth_events``; it must be this room's.

    v12 (rule 2): the room ID must be the create event's ID with ``!`` for ``$``.
    v1-v11 (rules 2.4, 2.5): the create event must be there, in the same room.
    """
    create = auth_events.get(CREATE_KEY)
    if create is not None and not is_create_event(create):
        create = None  # whatever was filed under the create key, it is not a create event
    rules = event.rules
    if rules.room_id_from_create_event:
        if create is None or room_id_from_create_event_id(create.event_id) != event.room_id:
            raise reject(
                rules, "room_id_is_create", "room_id is not the ID of an accepted create event"
            )
        return create
    if create is None:
        raise reject(rules, "auth_events.no_create", "no m.room.create event in the auth events")
    if create.room_id != event.room_id:
        raise reject(rules, "auth_events.same_room", "m.room.create is from another room")
    return create


def check_federation_allowed(event: Event, create: Event) -> None:
    """``m.federate: false`` keeps senders of other servers out."""
    if create.content.get("m.federate", True) is False and server_name_of(
        event.sender
    ) != server_name_of(create.sender):
        raise reject(
            event.rules, "federate", "room is not federated and the sender is on another server"
        )


def check_aliases_event(event: Event) -> None:
    """v1-v5, ``m.room.aliases``: the state key is the sender's server."""
    rules = event.rules
    if event.state_key is None:
        raise reject(rules, "aliases.no_state_key", "m.room.aliases: no state_key")
    if event.state_key != server_name_of(event.sender):
        raise reject(rules, "aliases.domain", "m.room.aliases: state_key is not sender's server")


def check_sender_joined(event: Event, state: Mapping[StateKey, Event]) -> None:
    """The sender must be joined to send anything but membership events."""
    if membership_of(event.sender, state) != "join":
        raise reject(event.rules, "sender_joined", "sender is not joined to the room")


def check_third_party_invite_event(
    event: Event, power_levels: Event | None, sender_level: PowerLevel
) -> None:
    """``m.room.third_party_invite``: the sender needs the invite level."""
    if sender_level >= named_level(power_levels, "invite", event.rules):
        return
    raise reject(
        event.rules,
        "third_party_invite",
        "m.room.third_party_invite: sender lacks the invite power level",
    )


def check_required_power_level(
    event: Event, power_levels: Event | None, sender_level: PowerLevel
) -> None:
    """The sender needs the power level the event's type requires."""
    required = required_power_level(
        event.type,
        is_state=event.state_key is not None,
        power_levels=power_levels,
        rules=event.rules,
    )
    if required > sender_level:
        raise reject(
            event.rules,
            "required_power",
            f"{event.type}: needs power level {required}, sender has {sender_level}",
        )


def check_state_key_user(event: Event) -> None:
    """A state key that starts with ``@`` must be the sender's own user ID."""
    state_key = event.state_key
    if state_key is not None and state_key.startswith("@") and state_key != event.sender:
        raise reject(event.rules, "state_key_user", f"{event.type}: state_key is another user's ID")


def check_redaction_event(
    event: Event, power_levels: Event | None, sender_level: PowerLevel
) -> None:
    """v1-v2, ``m.room.redaction``: redact level, or the same server as the redacted event."""
    rules = event.rules
    if sender_level >= named_level(power_levels, "redact", rules):
        return
    redacts = event.redacts
    if redacts is not None and server_name_of(redacts) == server_name_of(event.event_id):
        return
    raise reject(
        rules,
        "redaction.otherwise",
        "m.room.redaction: needs the redact level or an event of the same server",
    )

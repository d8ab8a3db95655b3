"""The read side: current state, state after events, forward extremities, stored events."""

from roomserver.query.queries import Queries, UnknownEvents, UnknownRoom

__all__ = ["Queries", "UnknownEvents", "UnknownRoom"]

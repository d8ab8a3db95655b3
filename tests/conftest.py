"""Settings shared by every test."""

import pytest
from hypothesis import settings

from roomserver import _native

# Property tests check what inputs do, not how fast: on a shared, loaded machine a per-example
# deadline only makes them flaky.
settings.register_profile("roomserver", deadline=None)
settings.load_profile("roomserver")


# Tests that patch a method of a class in the compiled modules (roomserver/_native.py) to watch
# it: compiled callers call the method directly, so the patch would see nothing. They run where
# the modules are interpreted: `./dev test` runs them again with ROOMSERVER_NATIVE=0 after the
# main run when that run was compiled.
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _native.STATE.compiled:
        return
    skip = pytest.mark.skip(
        reason="patches a compiled class: runs with ROOMSERVER_NATIVE=0 (./dev test does)"
    )
    for item in items:
        if item.get_closest_marker("interpreted") is not None:
            item.add_marker(skip)

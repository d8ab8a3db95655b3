"""Settings shared by every test."""

from hypothesis import settings

# Property tests check what inputs do, not how fast: on a shared, loaded machine a per-example
# deadline only makes them flaky.
settings.register_profile("roomserver", deadline=None)
settings.load_profile("roomserver")

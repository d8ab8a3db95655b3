"""Helpers for tests and benchmarks: building properly signed rooms. Not used by the service."""

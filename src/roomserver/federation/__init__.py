"""federation layer."""

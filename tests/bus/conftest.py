from tests.natsutil import nats_server

__all__ = ["nats_server"]

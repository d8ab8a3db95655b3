"""The pure core: Matrix rules with no I/O, no asyncio and no clock."""

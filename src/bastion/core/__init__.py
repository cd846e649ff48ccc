"""Sans-I/O decisions: cookies, signing, keys, clocks, audit events. No sockets, no asyncio."""

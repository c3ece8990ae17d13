"""asyncio networking: listener, client and upstream legs, the relay between them."""

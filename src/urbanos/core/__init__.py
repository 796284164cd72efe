"""Pure NGSI-LD logic: no I/O, no asyncio, no database, no HTTP (a test enforces it)."""

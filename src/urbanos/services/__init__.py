"""Use cases over the stores: what the HTTP layer calls; no Starlette types here."""

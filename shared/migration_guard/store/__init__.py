"""Store: Redis, the facts cache and the event stream (its name and event schema live here once)."""

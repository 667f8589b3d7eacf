"""pve-migration-guard: the CPU compatibility engine and the service under it."""

__version__ = "0.1.0"

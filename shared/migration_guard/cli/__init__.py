"""The ``migration-guard`` command line. One module per command group, each with ``register(subparsers)``."""

"""Demo: the Proxmox-shaped test server and ``serve --demo``."""

"""Cluster: the proxmoxer reader (node status, VM status, inventory). Imports no service, no store."""

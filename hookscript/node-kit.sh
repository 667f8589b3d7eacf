#!/bin/sh
# migration-guard node kit @VERSION@ (GET /v1/node-kit of @URL@): the node hookscript and its
# standard-library installer, for a Proxmox VE node that has nothing but python3. Run as root:
#   curl -fsS -H "Authorization: Bearer $T" @URL@/v1/node-kit | sh -s -- --all-nodes
# Options (of `migration-guard-hook rollout`): --all-nodes (every node of `pvecm nodes`, over root
# SSH), --no-attach, --mode enforce|warn|off, --fail open|closed, --url URL, --token-file FILE,
# --storage NAME. The files go to every node first; VMs are attached only once every node has them.
# The token comes inside this script (never on a command line) and lands in a mode 0600 file.
# Everything below is read before anything runs: a cut download runs nothing.

unpack() {
@FILES@
}

main() {
    set -eu
    if ! command -v python3 >/dev/null 2>&1; then
        echo "migration-guard node kit: python3 is missing on this node (Proxmox VE ships it)" >&2
        exit 2
    fi
    umask 077
    kit=$(mktemp -d "${TMPDIR:-/tmp}/migration-guard-kit.XXXXXX")
    trap 'rm -rf "$kit"' EXIT
    trap 'exit 130' INT TERM
    unpack "$kit"
    chmod 755 "$kit/migration-guard-hook"
    python3 -IS "$kit/migration-guard-hook" rollout --url @URL_QUOTED@ "$@" </dev/null
}

main "$@"

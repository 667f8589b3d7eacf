"""The attach timer (standard library only): a systemd timer and its oneshot service on each node run
`migration-guard-hook attach` every few minutes, so a VM created (or moved here) later gets the
hookscript by itself, its previous hookscript chained. What it did goes to the journal
(`journalctl -u migration-guard-attach`).

A timer, not a path unit on /etc/pve: /etc/pve is pmxcfs, a FUSE file system. inotify sees only the
changes made through this node's own mount, not those another node makes (a VM created or migrated
there arrives through corosync, not through the kernel's VFS on this node), so a path unit would miss
them; a timer catches every VM within its period, whatever made it."""

from __future__ import annotations

from pathlib import Path

from guard_plan import SCRIPT_NAME, InstallOptions, NodeState, Step

SERVICE = "migration-guard-attach.service"
TIMER = "migration-guard-attach.timer"
UNITS = (SERVICE, TIMER)
PERIOD = "5min"


def render_service(opts: InstallOptions, snippets: Path) -> str:
    args = [str(snippets / SCRIPT_NAME), "attach", "--storage", opts.storage]
    if opts.root != Path("/"):
        args += ["--root", str(opts.root)]
    if opts.config_dir is not None:
        args += ["--config-dir", str(opts.config_dir)]
    if opts.snippets_dir is not None:
        args += ["--snippets-dir", str(opts.snippets_dir)]
    return "\n".join(
        [
            "# written by `migration-guard-hook install --attach all`; removed by uninstall and --mode off",
            "[Unit]",
            "Description=migration-guard: attach the hookscript to this node's VMs that lack it",
            "After=pve-cluster.service",
            "",
            "[Service]",
            "Type=oneshot",
            "ExecStart=" + " ".join(args),
            "SyslogIdentifier=migration-guard-attach",
            "Nice=10",
            "",
        ]
    )


def render_timer() -> str:
    return "\n".join(
        [
            "# written by `migration-guard-hook install --attach all`; removed by uninstall and --mode off",
            "[Unit]",
            f"Description=migration-guard: attach the hookscript to new VMs every {PERIOD}",
            "",
            "[Timer]",
            "OnBootSec=3min",
            f"OnUnitActiveSec={PERIOD}",
            "RandomizedDelaySec=30s",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )


def timer_on_steps(opts: InstallOptions, state: NodeState) -> list[Step]:
    """Write the two units when they differ from what is there; then reload and start the timer."""
    want = {SERVICE: render_service(opts, state.snippets_dir), TIMER: render_timer()}
    steps = [
        Step("write-unit", f"write {opts.units_dir / name}", opts.units_dir / name, text.encode(), 0o644)
        for name, text in want.items()
        if state.units.get(name) != text
    ]
    if steps:
        steps += [
            Step("systemctl", "systemctl daemon-reload", content=b"daemon-reload"),
            Step(
                "systemctl",
                f"start the attach timer (every {PERIOD}): systemctl enable --now {TIMER}",
                content=f"enable --now {TIMER}".encode(),
            ),
        ]
    return steps


def timer_off_steps(opts: InstallOptions, state: NodeState) -> list[Step]:
    """Stop and remove the timer and its service, when they are there."""
    if not state.units:
        return []
    return [
        Step(
            "systemctl",
            f"stop the attach timer: systemctl disable --now {TIMER}",
            content=f"disable --now {TIMER}".encode(),
        ),
        *(
            Step("remove-unit", f"remove {opts.units_dir / name}", opts.units_dir / name)
            for name in sorted(state.units)
        ),
        Step("systemctl", "systemctl daemon-reload", content=b"daemon-reload"),
    ]

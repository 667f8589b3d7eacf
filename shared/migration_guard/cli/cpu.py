"""``migration-guard cpu``: check, migrate, recommend, models — the engine on local files, no service.

Exit codes: 0 runnable/allow, 1 not runnable/deny, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace

from migration_guard.cli import baseline
from migration_guard.cli.whatif import register_cpu_list
from migration_guard.engine import phys_bits
from migration_guard.engine.checks import nested_host_note
from migration_guard.engine.cpu_models import catalog
from migration_guard.engine.cpu_spec import CustomModel, parse_cpu, parse_custom_models
from migration_guard.engine.hosts import HostCpu, load_host_file
from migration_guard.engine.verdicts import check_migration, check_runnable, recommend
from migration_guard.errors import HostDataError, InputError


def register(subparsers) -> None:
    cpu = subparsers.add_parser(
        "cpu",
        help="judge CPU types against node CPUs (local files, no service)",
        description="Judge Proxmox CPU types against node CPUs from local files.",
    )
    sub = cpu.add_subparsers(dest="cpu_command", metavar="COMMAND", parser_class=type(cpu))
    cpu.set_defaults(func=lambda args: _usage(cpu))

    custom_help = "cpu-models.conf (/etc/pve/virtual-guest/cpu-models.conf) defining custom-NAME types"
    host_help = "a /proc/cpuinfo text, a JSON host file ({name, vendor, model, flags}), or - for stdin"

    check = sub.add_parser(
        "check",
        help="can each CPU type start on each node?",
        description="Can each CPU type start on each node? Exit 0 when all can, 1 otherwise.",
    )
    check.add_argument(
        "--cpu",
        action="append",
        required=True,
        metavar="SPEC",
        help="a VM's cpu: value, e.g. 'x86-64-v2-AES' or 'kvm64,flags=+pcid' (repeatable)",
    )
    check.add_argument(
        "--host", action="append", required=True, metavar="FILE", help=host_help + " (repeatable)"
    )
    check.add_argument("--custom-models", metavar="FILE", help=custom_help)
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(func=_check)

    migrate = sub.add_parser(
        "migrate",
        help="may a VM with this CPU type move from SOURCE to TARGET?",
        description="May a VM with this CPU type move from SOURCE to TARGET? Exit 0 allow, 1 deny.",
    )
    migrate.add_argument("--cpu", required=True, metavar="SPEC", help="the VM's cpu: value")
    migrate.add_argument("--source", required=True, metavar="FILE", help=host_help)
    migrate.add_argument("--target", required=True, metavar="FILE", help=host_help)
    migrate.add_argument("--stopped", action="store_true", help="the VM is stopped (offline migration)")
    migrate.add_argument("--custom-models", metavar="FILE", help=custom_help)
    migrate.add_argument("--json", action="store_true", help="print JSON")
    migrate.set_defaults(func=_migrate)

    rec = sub.add_parser(
        "recommend",
        help="the most capable CPU type every node runs",
        description="The most capable CPU type every node runs (a cluster baseline).",
    )
    rec.add_argument(
        "--host", action="append", required=True, metavar="FILE", help=host_help + " (repeatable)"
    )
    rec.add_argument("--json", action="store_true", help="print JSON")
    rec.set_defaults(func=_recommend)

    models = sub.add_parser(
        "models",
        help="the known CPU types with vendor and provenance",
        description="The known CPU types with vendor and provenance.",
    )
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(func=_models)
    baseline.register(sub, host_help)

    register_cpu_list(sub)  # cpu list: the shipped real CPUs (cli/whatif.py)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _load_hosts(paths: Sequence[str]) -> list[HostCpu]:
    if sum(1 for p in paths if p == "-") > 1:
        raise HostDataError("stdin (-) can be given as a host only once")
    return [load_host_file(p) for p in paths]


def _custom(path: str | None) -> dict[str, CustomModel] | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"custom models file {path} cannot be read: {getattr(exc, 'strerror', None) or exc}"
        ) from exc
    return parse_custom_models(text)


_BLOCKED_TYPES_SHOWN = 4


def _short_list(names: Sequence[str], limit: int = 8) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" (+{len(names) - limit} more)"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2))


def _check(args: argparse.Namespace) -> int:
    custom = _custom(args.custom_models)
    specs = [(text, parse_cpu(text, custom)) for text in args.cpu]
    hosts = _load_hosts(args.host)
    nested = {h.name: n.message for h in hosts if (n := nested_host_note(h)) is not None}
    results = []
    for text, spec in specs:
        for host in hosts:
            verdict = check_runnable(spec, host)
            results.append((text, verdict))
    if args.json:
        _print_json(
            [
                {
                    "cpu": text,
                    "host": v.host,
                    "runnable": v.runnable,
                    "missing": list(v.missing),
                    "model": v.model,
                    **({"facts": [nested[v.host]]} if v.host in nested else {}),
                }
                for text, v in results
            ]
        )
    else:
        rows = [["CPU", "HOST", "RESULT", "MODEL", "MISSING"]]
        for text, v in results:
            rows.append(
                [
                    text or "kvm64",
                    v.host,
                    "runs" if v.runnable else "NO",
                    v.model,
                    ", ".join(v.missing) or "-",
                ]
            )
        print(_table(rows))
        notes = [r.message for _, v in results for r in v.reasons if r.code != "missing-flags"]
        for note in dict.fromkeys([*notes, *nested.values()]):
            print(f"note: {note}")
    return 0 if all(v.runnable for _, v in results) else 1


def _migrate(args: argparse.Namespace) -> int:
    custom = _custom(args.custom_models)
    spec = parse_cpu(args.cpu, custom)
    source, target = _load_hosts([args.source, args.target])
    verdict = check_migration(spec, source, target, running=not args.stopped)
    widths = phys_bits.reasons(spec, source, target, running=not args.stopped)
    if widths:  # the guest's physical address width against the target's (host files' address sizes)
        wider = any(r.code == phys_bits.CODE for r in widths)
        kind = "deny" if wider else verdict.verdict
        verdict = replace(verdict, verdict=kind, reasons=verdict.reasons + tuple(widths))
    judged = [source, target] if spec.is_passthrough and not args.stopped else [target]
    notes = [n for n in map(nested_host_note, judged) if n is not None]
    if args.json:
        _print_json(
            {
                "verdict": verdict.verdict,
                "reasons": [{"code": r.code, "message": r.message} for r in verdict.reasons],
                "suggestion": verdict.suggestion,
                **({"facts": [{"code": n.code, "message": n.message} for n in notes]} if notes else {}),
            }
        )
    else:
        mode = "offline" if args.stopped else "live"
        print(
            f"{verdict.verdict.upper()}: {mode} migration of cpu {args.cpu or 'kvm64'} ({verdict.model}) "
            f"from {source.name} to {target.name}"
        )
        if verdict.reasons:
            rows = [[r.code, r.message] for r in verdict.reasons]
            print("\n".join("  " + line for line in _table(rows).splitlines()))
        if verdict.suggestion:
            print(f"  suggestion: {verdict.suggestion}")
        for note in notes:
            print(f"  note: {note.message}")
    return 0 if verdict.verdict == "allow" else 1


def _recommend(args: argparse.Namespace) -> int:
    hosts = _load_hosts(args.host)
    rec = recommend(hosts)
    if args.json:
        _print_json(
            {
                "recommended": rec.recommended,
                "ranked": list(rec.ranked),
                "blocked": [
                    {"type": b.type, "host": b.host, "missing": list(b.missing)} for b in rec.blocked
                ],
            }
        )
    else:
        names = ", ".join(h.name for h in hosts)
        if rec.recommended:
            print(f"recommended: {rec.recommended} (runs on {names})")
        else:
            print(f"no CPU type runs on all of {names}")
        if len(rec.ranked) > 1:
            print(
                f"also runs everywhere: {', '.join(rec.ranked[1:8])}{' ...' if len(rec.ranked) > 8 else ''}"
            )
        if rec.blocked:
            # the next steps up first: the better types closest to the recommendation
            types = list(dict.fromkeys(b.type for b in rec.blocked))
            nearest = set(types[-_BLOCKED_TYPES_SHOWN:])
            rows = [["BETTER TYPE", "HOST", "LACKS"]]
            for b in reversed(rec.blocked):
                if b.type in nearest:
                    rows.append([b.type, b.host, _short_list(b.missing)])
            print(_table(rows))
            if len(types) > len(nearest):
                print(f"... and {len(types) - len(nearest)} more better types (use --json)")
    return 0 if rec.recommended else 1


def _models(args: argparse.Namespace) -> int:
    cat = catalog()
    entries = []
    for name in cat.names():
        m = cat.models[name]
        entries.append(
            {
                "name": m.name,
                "vendor": m.vendor,
                "family": m.family or None,
                "version": m.version,
                "alias_of": m.alias_of,
                "deprecated": m.deprecated,
                "passthrough": m.passthrough,
                "features": len(m.features),
                "source": m.source,
            }
        )
    if args.json:
        _print_json({"provenance": cat.provenance, "models": entries})
    else:
        rows = [["TYPE", "VENDOR", "FEATURES", "NOTE", "SOURCE"]]
        for name in cat.names():
            m = cat.models[name]
            if m.alias_of:
                note = f"= {m.alias_of}"
            elif m.deprecated:
                note = "deprecated"
            elif m.passthrough:
                note = "passthrough"
            else:
                note = "-"
            features = "-" if m.passthrough else str(len(m.features))
            rows.append([m.name, m.vendor or "any", features, note, m.source or "-"])
        print(_table(rows))
        prov = cat.provenance
        if prov:
            print(
                "provenance: " + "; ".join(f"{k}: {v}" for k, v in prov.items() if isinstance(v, str | int))
            )
    return 0

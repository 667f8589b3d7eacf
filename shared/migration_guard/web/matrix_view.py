"""What the matrix page shows of the service's matrix (the same answer as ``GET /v1/matrix``): the
rows the filters keep (the VM's node, CPU type, a verdict, a tag), in the order asked (by VM id or
most blocked first), one page of them. Pure: a dict in, a dict out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

VERDICTS = ("allow", "deny", "unknown")
SORTS = ("vmid", "blocked")
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class MatrixQuery:
    node: str = ""
    cpu: str = ""
    verdict: str = ""
    tag: str = ""
    sort: str = "vmid"
    page: int = 1
    per_page: int = DEFAULT_PAGE_SIZE

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string of this view with ``changes`` (for the pager and the sort links);
        empty filters left out."""
        values = {
            "node": self.node,
            "cpu": self.cpu,
            "verdict": self.verdict,
            "tag": self.tag,
            "sort": self.sort,
            "page": str(self.page),
            "per_page": str(self.per_page),
        }
        values.update({k: str(v) for k, v in changes.items()})
        defaults = {"sort": "vmid", "page": "1", "per_page": str(DEFAULT_PAGE_SIZE)}
        return {k: v for k, v in values.items() if v and defaults.get(k) != v}


def _number(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() and len(text) < 7 else default


def parse_query(params: Mapping[str, str]) -> MatrixQuery:
    """The filters of a request's query; a value that is not one of the choices is ignored (the
    page then shows every row for that filter, never an error)."""
    verdict = params.get("verdict", "")
    sort = params.get("sort", "vmid")
    per_page = _number(params.get("per_page"), DEFAULT_PAGE_SIZE)
    return MatrixQuery(
        node=params.get("node", "")[:63],
        cpu=params.get("cpu", "")[:200],
        verdict=verdict if verdict in VERDICTS else "",
        tag=params.get("tag", "")[:200],
        sort=sort if sort in SORTS else "vmid",
        page=max(1, _number(params.get("page"), 1)),
        per_page=per_page if per_page in PAGE_SIZES else DEFAULT_PAGE_SIZE,
    )


def _blocked(row: dict) -> tuple[int, int]:
    cells = row["targets"].values()
    return sum(c["verdict"] == "deny" for c in cells), sum(c["verdict"] == "unknown" for c in cells)


def view(matrix: dict, query: MatrixQuery) -> dict[str, Any]:
    """The page: ``rows`` (each with its ``blocked`` and ``unknown`` counts), ``total`` rows kept by
    the filters, ``pages``, the page shown, and the choices of each filter (from every row)."""
    rows: list[dict] = matrix["vms"]
    kept = [
        r
        for r in rows
        if (not query.node or r["node"] == query.node)
        and (not query.cpu or r["cpu"] == query.cpu)
        and (not query.tag or query.tag in r.get("tags", ()))
        and (not query.verdict or any(c["verdict"] == query.verdict for c in r["targets"].values()))
    ]
    counted = [(r, *_blocked(r)) for r in kept]
    if query.sort == "blocked":  # most denied targets first, then most unknown, then by VM id
        counted.sort(key=lambda t: (-t[1], -t[2], t[0]["vmid"]))
    pages = max(1, -(-len(counted) // query.per_page))
    page = min(query.page, pages)
    start = (page - 1) * query.per_page
    shown = [
        {**r, "blocked": blocked, "unknown": unknown}
        for r, blocked, unknown in counted[start : start + query.per_page]
    ]
    return {
        "rows": shown,
        "total": len(kept),
        "all": len(rows),
        "page": page,
        "pages": pages,
        "nodes": matrix["nodes"],
        "choices": {
            "node": sorted({r["node"] for r in rows}),
            "cpu": sorted({r["cpu"] for r in rows}),
            "tag": sorted({t for r in rows for t in r.get("tags", ())}),
            "verdict": list(VERDICTS),
        },
    }

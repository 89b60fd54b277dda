"""The doors `make security` tries (tests/e2e/test_security.py, test_tls.py), and their summary.

Each door tried is recorded in tests/artifacts/security.json as it is tried — closed or open,
with its evidence — so a failing test still shows which doors it reached. ``python
tests/e2e/doors.py`` prints ONE JSON line:

    {"doors_tried": N, "open": K, "open_doors": [...], "doors": {name: "closed" | "open"}}

and exits 1 if a door is open or none was tried.
"""
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from reliability import locked_json

RESULTS = Path(__file__).resolve().parents[1] / "artifacts" / "security.json"


@contextmanager
def _results():
    with locked_json(RESULTS) as data:
        data.setdefault("doors", {})
        yield data


def door(name: str, closed: bool, evidence="") -> bool:
    """Record one door (who tries what: "student: ..." or "stranger: ..."); returns ``closed``."""
    with _results() as data:
        data["doors"][name] = {"closed": bool(closed), "evidence": str(evidence)[:400]}
    return bool(closed)


def figure(name: str, value) -> None:
    with _results() as data:
        data.setdefault("figures", {})[name] = value


def reset() -> None:
    RESULTS.unlink(missing_ok=True)


def summary() -> dict:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"doors": {}}
    doors = data["doors"]
    open_doors = sorted(name for name, d in doors.items() if not d["closed"])
    return {"doors_tried": len(doors), "open": len(open_doors), "open_doors": open_doors,
            "figures": data.get("figures", {}),
            "doors": {name: "closed" if d["closed"] else "open" for name, d in sorted(doors.items())}}


if __name__ == "__main__":
    line = summary()
    print(json.dumps(line))
    sys.exit(1 if line["open"] or not line["doors_tried"] else 0)

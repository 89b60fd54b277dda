"""Memory sizes and CPU counts as admins write them (8G, 1.5G, 512M; 2, 0.5), for settings and
profiles alike. Pure: ValueError for what is not one."""
import re

_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(raw: str) -> int:
    """A size like 512M, 8G or 1.5G (binary units) as bytes."""
    match = _BYTES.match(raw)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{raw!r} is not a size: use a number with K, M, G or T, e.g. 8G")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def parse_cpus(raw: str) -> float:
    """A CPU count like 2 or 0.5 (Docker's --cpus)."""
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{raw!r} is not a CPU count: use a positive number, e.g. 2 or 0.5")
    return value


def format_size(size: int) -> str:
    """Bytes as a person reads them: 512 MiB, 1.5 GiB."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"

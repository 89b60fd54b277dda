import json

from hub import journal
from hub.common.audit import AuditLog


def test_entry_has_time_who_via_and_the_fields():
    e = journal.entry(1795424400.12345, "alice", "console", action="drain", gpu="GPU-1")
    assert e == {"time": "2026-11-23T09:00:00Z", "epoch": 1795424400.123, "who": "alice", "via": "console",
                 "action": "drain", "gpu": "GPU-1"}


def test_the_gate_and_the_audit_log_write_the_same_lines(tmp_path):
    path = tmp_path / "gpu-audit.jsonl"
    journal.append(path, journal.entry(10.0, "hub", "health check", action="drain"))
    written = AuditLog(path).write(20.0, "alice", "console", action="undrain")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[1] == written
    assert AuditLog(path).tail(2) == [written, lines[0]]
    assert path.read_text().splitlines()[0] == json.dumps(lines[0], sort_keys=True)

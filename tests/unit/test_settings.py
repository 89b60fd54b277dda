import pytest
from traitlets.config.loader import ConfigError

from hub.settings import readers


@pytest.mark.parametrize("raw,expected", [
    ("8G", 8 * 2**30), ("512M", 512 * 2**20), ("1.5G", int(1.5 * 2**30)), ("64k", 64 * 2**10),
    ("2Gi", 2 * 2**30), ("1024", 1024), (" 4 G ", 4 * 2**30), ("1T", 2**40),
])
def test_byte_size(raw, expected):
    assert readers.byte_size({"X": raw}, "X", "1G") == expected


@pytest.mark.parametrize("raw", ["lots", "8X", "-1G", "0", "G", "1.2.3G"])
def test_byte_size_rejects_with_the_fix(raw):
    with pytest.raises(ConfigError, match=r"USER_MEM_LIMIT=.*e\.g\. USER_MEM_LIMIT=8G"):
        readers.byte_size({"USER_MEM_LIMIT": raw}, "USER_MEM_LIMIT", "8G")


def test_unset_or_blank_means_default():
    assert readers.byte_size({}, "X", "2G") == 2 * 2**30
    assert readers.byte_size({"X": "  "}, "X", "2G") == 2 * 2**30
    assert readers.cpus({"X": ""}, "X", "2") == 2.0


@pytest.mark.parametrize("raw,expected", [("2", 2.0), ("0.5", 0.5), ("16", 16.0)])
def test_cpus(raw, expected):
    assert readers.cpus({"C": raw}, "C", "2") == expected


@pytest.mark.parametrize("raw", ["0", "-1", "two", "nan"])
def test_cpus_rejects(raw):
    with pytest.raises(ConfigError, match="USER_CPU_LIMIT"):
        readers.cpus({"USER_CPU_LIMIT": raw}, "USER_CPU_LIMIT", "2")


@pytest.mark.parametrize("raw", ["0", "-5", "1.5", "many"])
def test_positive_int_rejects(raw):
    with pytest.raises(ConfigError, match="USER_PIDS_LIMIT"):
        readers.positive_int({"USER_PIDS_LIMIT": raw}, "USER_PIDS_LIMIT", "1024")


@pytest.mark.parametrize("raw,expected", [("true", True), ("Yes", True), ("1", True), ("false", False), ("off", False)])
def test_boolean(raw, expected):
    assert readers.boolean({"B": raw}, "B", "false") is expected


def test_boolean_rejects():
    with pytest.raises(ConfigError, match="HUB_OPEN_SIGNUP='maybe'"):
        readers.boolean({"HUB_OPEN_SIGNUP": "maybe"}, "HUB_OPEN_SIGNUP", "false")


@pytest.mark.parametrize("raw", ["Gpuhub", "gpu_hub", "-x", "a" * 31, "gpu hub", "../x"])
def test_name_prefix_rejects(raw):
    with pytest.raises(ConfigError, match="HUB_NAME_PREFIX"):
        readers.name_prefix({"HUB_NAME_PREFIX": raw}, "HUB_NAME_PREFIX", "gpuhub")


@pytest.mark.parametrize("raw", ["Admin", "ad min", "", "../root"])
def test_username_rejects(raw):
    if raw == "":
        assert readers.username({"U": raw}, "U", "admin") == "admin"
        return
    with pytest.raises(ConfigError, match="U="):
        readers.username({"U": raw}, "U", "admin")


# ---- every read of the environment goes through the table ----------------------------------
import ast  # noqa: E402
from pathlib import Path  # noqa: E402

import hub.settings  # noqa: E402
from hub.settings.table import SETTINGS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ENV_NAMES = {"env", "environ", "environment"}
# hub/settings' names for variables (RECLAIM_TOKEN_ENV = "GPUHUB_RECLAIM_API_TOKEN", ...)
SETTINGS_CONSTANTS = {k: v for k, v in vars(hub.settings).items() if k.endswith("_ENV") and isinstance(v, str)}
DYNAMIC = "(a name known at run time)"
# Where a module reads a variable itself, and why (a process boundary or a program of its own).
ALLOWED = {
    ("hub/service_process/console/cli.py", "GPUHUB_URL"): "gpuhub-gpus on an admin's shell: its own variables, not the deployment's",
    ("hub/service_process/console/cli.py", "GPUHUB_TOKEN"): "gpuhub-gpus on an admin's shell: its own variables, not the deployment's",
    ("hub/gpus/doctor.py", "NVIDIA_CTK_VERSION"): "gpuhub-gpus doctor runs on the host too, below the settings floor (stdlib only)",
    ("hub/gpus/doctor.py", "SINGLEUSER_IMAGE"): "gpuhub-gpus doctor runs on the host too, below the settings floor (stdlib only)",
    ("hub/gpus/doctor.py", "GPU_TOOLKIT_MIN_VERSION"): "gpuhub-gpus doctor runs on the host too, below the settings floor (stdlib only)",
    ("hub/gpus/doctor.py", "GPU_TOOLKIT_OVERRIDE"): "gpuhub-gpus doctor runs on the host too, below the settings floor (stdlib only)",
}


def _is_env(node: ast.AST) -> bool:
    """os.environ, or a mapping named env/environ/environment."""
    if isinstance(node, ast.Attribute) and node.attr == "environ":
        return True
    return isinstance(node, ast.Name) and node.id in ENV_NAMES


def env_reads(source: str) -> list[tuple[int, str, bool]]:
    """(line, variable, inside a dict comprehension) of each read of an environment variable by
    name: env.get(X), env[X], env.pop(X), os.getenv(X). X a string, a module constant or a
    constant of hub.settings; anything else is DYNAMIC. A comprehension that builds a dict from
    such reads passes variables on to another process's environment, unparsed."""
    tree = ast.parse(source)
    constants = dict(SETTINGS_CONSTANTS)
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            constants.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    in_dictcomp = {id(n) for d in ast.walk(tree) if isinstance(d, ast.DictComp) for n in ast.walk(d)}

    def name_of(key: ast.AST | None) -> str:
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
        if isinstance(key, ast.Name) and key.id in constants:
            return constants[key.id]
        return DYNAMIC

    reads = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if f.attr in ("get", "pop", "setdefault") and _is_env(f.value) and node.args:
                key = node.args[0]
            elif f.attr == "getenv" and isinstance(f.value, ast.Name) and f.value.id == "os" and node.args:
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_env(node.value):
            key = node.slice
        if key is not None:
            reads.append((node.lineno, name_of(key), id(node) in in_dictcomp))
    return sorted(reads)


def known(name: str) -> bool:
    return name == DYNAMIC or name in SETTINGS or name.startswith("GPUHUB_")


def own_reads(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    return [f"{rel}:{line}: {name}" for line, name, passed_on in env_reads(path.read_text())
            if known(name) and not (name == DYNAMIC and passed_on) and (rel, name) not in ALLOWED]


def test_the_reader_sees_reads_by_name_constant_and_run_time_name():
    source = ('import os\nX = "GPUHUB_USAGE_DB"\n'
              'a = os.environ.get("GPUHUB_STATE_DIR")\nb = env[X]\nc = os.getenv("HUB_LOG_LEVEL")\n'
              'd = env.get(RECLAIM_TOKEN_ENV, "")\ne = [n for n in NAMES if env.get(n)]\n'
              'f = {n: env[n] for n in NAMES}\ng = os.environ.get("HOME")\n')
    assert env_reads(source) == [(3, "GPUHUB_STATE_DIR", False), (4, "GPUHUB_USAGE_DB", False),
                                 (5, "HUB_LOG_LEVEL", False), (6, "GPUHUB_RECLAIM_API_TOKEN", False),
                                 (7, DYNAMIC, False), (8, DYNAMIC, True), (9, "HOME", False)]


def test_no_module_outside_the_settings_reads_a_setting_itself():
    """Every variable of the table (and every GPUHUB_ one) is read through hub.settings (``read``,
    ``given``, GPUSettings): no os.environ/os.getenv/env.get of one elsewhere in hub/, save the
    allowed ones above, each with its reason."""
    wrong = [hit for path in sorted((ROOT / "hub").rglob("*.py"))
             if "settings" not in path.relative_to(ROOT / "hub").parts[:1] for hit in own_reads(path)]
    assert not wrong, "read these through hub.settings.table.read (or allow one, with a reason):\n" + "\n".join(wrong)
    assert all(reason.strip() for reason in ALLOWED.values())

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

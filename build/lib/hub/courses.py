"""Courses and rosters: pure parsing and planning, no hub calls, no I/O.

A course is a JupyterHub group (its name is the course's name) whose ``properties`` carry
``{"gpuhub.course": {...}}``: who teaches it (``teachers``, ``tas``) and its settings
(``title``, ``max_session_hours``, ``materials``). Its members are the group's users; the
students are the members who are neither teachers nor TAs. Profiles are offered to a course
by naming its group in profiles.yaml (``groups: [ml101]``), and GPU reservations name it too.

A roster (CSV or YAML; one row per person and course: ``username`` or ``email``, ``course``,
``role``) is parsed into rows, every bad row is reported with its line, and `plan` turns the
good rows and the hub's current courses into the changes that make the hub match the roster
for the courses it names: users to create, groups to create, members to add and remove, roles
to change. Applying a plan twice changes nothing the second time.
"""
from __future__ import annotations

import csv
import io
import re
import reprlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import yaml

PROPERTY = "gpuhub.course"
ROLES = ("student", "ta", "teacher")
_ROLE_ALIASES = {"student": "student", "learner": "student", "ta": "ta", "assistant": "ta",
                 "teaching assistant": "ta", "tutor": "ta", "teacher": "teacher",
                 "instructor": "teacher", "lecturer": "teacher"}
# Course names become group names, volume names and paths: keep them to a safe alphabet.
COURSE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ROWS = 5000
MAX_USERNAME = 255
MAX_SESSION_HOURS = 24 * 14
COLUMNS = ("username", "email", "course", "role")


class RosterError(ValueError):
    """The roster as a whole cannot be read (not CSV/YAML, no header, too big)."""


@dataclass(frozen=True)
class Row:
    line: int
    username: str
    course: str
    role: str


@dataclass(frozen=True)
class BadRow:
    line: int
    text: str
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "row": self.text, "error": self.error}


@dataclass
class Roster:
    rows: list[Row] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


# ---- parsing ----------------------------------------------------------------------------

def parse_roster(text: str, fmt: str = "auto") -> Roster:
    """Rows and bad rows from CSV (a header row with ``username`` and/or ``email``, ``course``
    and optionally ``role``; other columns are ignored) or YAML (a list of such mappings, or
    ``{roster: [...]}``). ``fmt``: "csv", "yaml" or "auto" (YAML if it parses to a list or a
    mapping with ``roster``, else CSV).

    Linear in the text's size, so that the caller's bound on the size bounds the time: the CSV
    delimiter is chosen by counting (csv.Sniffer is quadratic in the first line: 40 KB of
    ``,'`` took it seconds), YAML is read with libyaml where PyYAML has it, and a bad row is
    shown in at most 200 characters, however it nests."""
    if fmt not in ("auto", "csv", "yaml"):
        raise RosterError(f"unknown roster format {fmt!r}: use 'csv', 'yaml' or 'auto'")
    text = text.lstrip("\ufeff")  # spreadsheets write a byte-order mark
    if not text.strip():
        raise RosterError("the roster is empty")
    if fmt == "auto":
        data = _yaml_data(text, quiet=True)
        fmt = "yaml" if isinstance(data, list) or (isinstance(data, dict) and "roster" in data) else "csv"
        records = _yaml_records(data) if fmt == "yaml" else _csv_records(text)
    else:
        records = _yaml_records(_yaml_data(text)) if fmt == "yaml" else _csv_records(text)
    roster = Roster(ignored_columns=records[1])
    seen: dict[tuple[str, str], Row] = {}
    for line, record, text_of_row in records[0]:
        try:
            row = _row(line, record)
        except ValueError as exc:
            roster.bad.append(BadRow(line, text_of_row, str(exc)))
            continue
        earlier = seen.get((row.username, row.course))
        if earlier is not None:
            if earlier.role != row.role:
                roster.bad.append(BadRow(line, text_of_row, f"{row.username} is already in {row.course} "
                                                            f"as {earlier.role} (line {earlier.line})"))
            continue  # an exact repeat changes nothing
        seen[(row.username, row.course)] = row
        roster.rows.append(row)
    return roster


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: about 5x faster
MAX_YAML_DEPTH = 8  # {roster: [{username: …}]} is 3 deep


class _TooDeep(Exception):
    pass


def _yaml_data(text: str, quiet: bool = False) -> Any:
    """The YAML document; with ``quiet``, None for text that is not YAML (a CSV roster).

    Its nesting is checked first, on the parser's events (libyaml's parser keeps its own stack,
    and the events of 1 MiB take about 0.1 s): libyaml's composer recurses in C, and a roster of
    ``[[[[…`` would crash the console's process, gpu-reclaim with it."""
    try:
        depth = 0
        for event in yaml.parse(text, Loader=_YAML_LOADER):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise _TooDeep
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except (yaml.YAMLError, RecursionError, ValueError, _TooDeep) as exc:  # ValueError: a date such as 2026-02-30
        if quiet:
            return None
        if isinstance(exc, (RecursionError, _TooDeep)):
            raise RosterError(f"the YAML roster nests more than {MAX_YAML_DEPTH} levels deep: it is a list of "
                              "{username or email, course, role} mappings") from None
        raise RosterError(f"the roster is not valid YAML: {_bounded(exc)}") from None


def _yaml_records(data: Any) -> tuple[list[tuple[int, Any, str]], list[str]]:
    if isinstance(data, dict) and set(data) == {"roster"}:
        data = data["roster"]
    if not isinstance(data, list):
        raise RosterError("a YAML roster is a list of {username or email, course, role} "
                          "mappings (or {roster: [...]})")
    _check_rows(len(data))
    return [(i + 1, item, _short(item)) for i, item in enumerate(data)], []


def _check_rows(count: int) -> None:
    if count > MAX_ROWS:
        raise RosterError(f"the roster has more than {MAX_ROWS} rows; split it")


def _delimiter(header: str) -> str:
    """The header line's delimiter: the most frequent of comma, semicolon and tab (comma when
    none or tied), as spreadsheets write them."""
    counts = {d: header.count(d) for d in ",;\t"}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _csv_records(text: str) -> tuple[list[tuple[int, Any, str]], list[str]]:
    first = text.split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(first))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise RosterError(f"the roster's first line is not a CSV header ({exc})") from None
    if "course" not in header or not {"username", "email"} & set(header):
        shown = _short(", ".join(header)) if header else "nothing"
        raise RosterError("the CSV roster needs a header row naming the columns 'course' and "
                          f"'username' or 'email' (and optionally 'role'); got {shown}")
    if len(set(header)) < len(header):
        raise RosterError("the CSV header names a column twice")
    records = []
    try:
        for values in reader:
            if not any(v.strip() for v in values):
                continue  # blank lines
            line = reader.line_num
            if len(values) > len(header):
                records.append((line, f"{len(values)} fields but the header has {len(header)}", _short(values)))
            else:
                record = {k: v for k, v in zip(header, values) if k in COLUMNS}  # others: ignored
                records.append((line, record, _short(values)))
            _check_rows(len(records))
    except csv.Error as exc:
        raise RosterError(f"the CSV roster cannot be read at line {reader.line_num}: {_bounded(exc)}") from None
    return records, [h for h in header if h not in COLUMNS]


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 3, 80, 80


def _short(value: Any) -> str:
    """A row as the report shows it: at most 200 characters, whatever it holds (YAML can nest
    lists in a row, or share one list many times over: str() of that could take hours)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value[:50]):
        text = ",".join(value[:50])
    elif isinstance(value, str):
        text = value
    else:
        text = _SHOWN.repr(value)
    return _bounded(text)


def _bounded(text: Any, limit: int = 200) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _row(line: int, record: Any) -> Row:
    if isinstance(record, str):
        raise ValueError(record)
    if not isinstance(record, dict):
        raise ValueError("a row must be a mapping with username or email, course and role")
    unknown = sorted(_bounded(k, 100) for k in record if k not in COLUMNS)
    if unknown:
        raise ValueError(f"unknown field {_bounded(unknown[0], 60)!r}; a row has username or email, course and role")
    values = {k: record.get(k) for k in COLUMNS}
    for key, value in values.items():
        if value is not None and not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[key] = str(value)
            else:
                raise ValueError(f"{key!r} must be text")
    username = (values["username"] or "").strip()
    email = (values["email"] or "").strip()
    if not username:
        if not email:
            raise ValueError("no username and no email")
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            raise ValueError(f"{_bounded(email, 80)!r} is not an email address")
        username = email
    username = username.lower()  # JupyterHub's default username normalisation
    if len(username) > MAX_USERNAME:
        raise ValueError(f"the username is longer than {MAX_USERNAME} characters")
    if _CONTROL.search(username) or "/" in username or username.strip(".") == "":
        raise ValueError(f"{_bounded(username, 80)!r} is not a valid username (no '/', control characters, or only dots)")
    course = (values["course"] or "").strip().lower()
    if not course:
        raise ValueError("no course")
    check_course_name(course)
    role = (values["role"] or "student").strip().lower()
    if role not in _ROLE_ALIASES:
        raise ValueError(f"unknown role {_bounded(role, 40)!r}: use student, ta or teacher")
    return Row(line, username, course, _ROLE_ALIASES[role])


def check_course_name(name: str) -> str:
    if not isinstance(name, str) or not COURSE_NAME.match(name):
        raise ValueError(f"{_bounded(name, 80)!r} is not a course name: use 1-63 lowercase letters, digits, '-', '_' "
                         "or '.', starting with a letter or digit")
    return name


# ---- the hub's courses ----------------------------------------------------------------------

@dataclass
class Course:
    name: str
    members: set[str] = field(default_factory=set)
    teachers: set[str] = field(default_factory=set)
    tas: set[str] = field(default_factory=set)
    title: str = ""
    max_session_hours: float | None = None
    materials: bool = True

    @property
    def staff(self) -> set[str]:
        return self.teachers | self.tas

    @property
    def students(self) -> set[str]:
        return self.members - self.staff

    def role_of(self, user: str) -> str | None:
        if user in self.teachers:
            return "teacher"
        if user in self.tas:
            return "ta"
        return "student" if user in self.members else None

    def properties(self) -> dict[str, Any]:
        """The value of the group's ``gpuhub.course`` property."""
        data: dict[str, Any] = {"teachers": sorted(self.teachers), "tas": sorted(self.tas),
                                "materials": self.materials}
        if self.title:
            data["title"] = self.title
        if self.max_session_hours is not None:
            data["max_session_hours"] = self.max_session_hours
        return data

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "teachers": sorted(self.teachers),
                "tas": sorted(self.tas), "students": sorted(self.students),
                "max_session_hours": self.max_session_hours, "materials": self.materials}


def course_from_group(model: Mapping[str, Any]) -> Course | None:
    """The course a group model (from the REST API, or the ORM's name/users/properties) is,
    or None for a group that is not a course."""
    props = (model.get("properties") or {}).get(PROPERTY)
    if not isinstance(props, dict):
        return None
    members = {u if isinstance(u, str) else u.get("name", "") for u in model.get("users") or []}
    hours = props.get("max_session_hours")
    return Course(
        name=model["name"], members=members - {""},
        teachers={u for u in props.get("teachers") or [] if isinstance(u, str)},
        tas={u for u in props.get("tas") or [] if isinstance(u, str)},
        title=props.get("title") if isinstance(props.get("title"), str) else "",
        max_session_hours=float(hours) if isinstance(hours, (int, float)) and not isinstance(hours, bool) else None,
        materials=props.get("materials") is not False,
    )


def check_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """A course's settings from a request: title, max_session_hours (null: no limit), materials."""
    allowed = {"title", "max_session_hours", "materials"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"unknown course setting {unknown[0]!r}; settings are {', '.join(sorted(allowed))}")
    out: dict[str, Any] = {}
    if "title" in data:
        title = data["title"]
        if not isinstance(title, str) or len(title) > 200 or _CONTROL.search(title):
            raise ValueError("'title' must be text of at most 200 characters")
        out["title"] = title.strip()
    if "max_session_hours" in data:
        hours = data["max_session_hours"]
        if hours is not None and (isinstance(hours, bool) or not isinstance(hours, (int, float))
                                  or not 0 < hours <= MAX_SESSION_HOURS):
            raise ValueError(f"'max_session_hours' must be a number of hours above 0 and at most "
                             f"{MAX_SESSION_HOURS}, or null for no limit")
        out["max_session_hours"] = None if hours is None else float(hours)
    if "materials" in data:
        if not isinstance(data["materials"], bool):
            raise ValueError("'materials' must be true or false")
        out["materials"] = data["materials"]
    return out


# ---- planning an import --------------------------------------------------------------------

@dataclass
class Plan:
    users_to_create: list[str] = field(default_factory=list)
    groups_to_create: list[str] = field(default_factory=list)
    add: dict[str, list[str]] = field(default_factory=dict)  # course -> users to add
    remove: dict[str, list[str]] = field(default_factory=dict)  # course -> users to remove
    roles: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # course -> changes
    courses: dict[str, Course] = field(default_factory=dict)  # the courses as they will be
    staff_changed: set[str] = field(default_factory=set)  # courses whose properties change

    @property
    def empty(self) -> bool:
        return not (self.users_to_create or self.groups_to_create or any(self.add.values())
                    or any(self.remove.values()) or any(self.roles.values()) or self.staff_changed)

    def properties_changed(self, course: str) -> bool:
        return course in self.groups_to_create or course in self.staff_changed

    def to_json(self) -> dict[str, Any]:
        return {
            "users_created": self.users_to_create,
            "groups_created": self.groups_to_create,
            "courses": {name: {"added": self.add.get(name, []), "removed": self.remove.get(name, []),
                               "role_changes": self.roles.get(name, []),
                               "members": len(c.members), "students": len(c.students),
                               "teachers": sorted(c.teachers), "tas": sorted(c.tas)}
                        for name, c in sorted(self.courses.items())},
        }


def plan(rows: Iterable[Row], users: Iterable[str], courses: Mapping[str, Course],
         groups: Iterable[str] = ()) -> Plan:
    """What to change so that each course named in `rows` has exactly the rows' members, with
    their roles. `users` are the hub's usernames, `courses` its courses, `groups` all its
    group names (a non-course group of a course's name is refused: it would be taken over)."""
    rows = list(rows)
    users, groups = set(users), set(groups)
    wanted: dict[str, dict[str, str]] = {}
    for row in rows:
        wanted.setdefault(row.course, {})[row.username] = row.role
    result = Plan()
    for name in sorted(wanted):
        if name in groups and name not in courses:
            raise ValueError(f"the hub has a group {name!r} that is not a course; rename the course "
                             "in the roster, or remove that group first")
    result.users_to_create = sorted({r.username for r in rows} - users)
    for name, members in sorted(wanted.items()):
        current = courses.get(name)
        if current is None:
            result.groups_to_create.append(name)
            current = Course(name)
        new = Course(name, set(members), {u for u, r in members.items() if r == "teacher"},
                     {u for u, r in members.items() if r == "ta"}, current.title,
                     current.max_session_hours, current.materials)
        result.add[name] = sorted(new.members - current.members)
        result.remove[name] = sorted(current.members - new.members)
        result.roles[name] = [{"user": u, "from": current.role_of(u), "to": new.role_of(u)}
                              for u in sorted(new.members & current.members)
                              if current.role_of(u) != new.role_of(u)]
        if new.teachers != current.teachers or new.tas != current.tas:
            result.staff_changed.add(name)
        result.courses[name] = new
    return result

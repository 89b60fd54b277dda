"""Rosters and courses (hub.courses): parsing, bad rows, idempotent plans."""
import pytest

from hub.courses import (
    PROPERTY,
    Course,
    RosterError,
    check_settings,
    course_from_group,
    parse_roster,
    plan,
)

CSV = """username,email,course,role,student_id
alice,,ml101,teacher,1
,Bob@Uni.example,ml101,student,2
carol,,ml101,TA,3
dave,,nlp,student,4
"""


def test_csv_roster_rows_with_emails_roles_and_ignored_columns():
    roster = parse_roster(CSV)
    assert [(r.username, r.course, r.role) for r in roster.rows] == [
        ("alice", "ml101", "teacher"), ("bob@uni.example", "ml101", "student"),
        ("carol", "ml101", "ta"), ("dave", "nlp", "student")]
    assert roster.bad == [] and roster.ignored_columns == ["student_id"]


def test_yaml_roster_and_default_role():
    roster = parse_roster("roster:\n  - {username: Eve, course: ml101}\n  - {email: f@x.org, course: ml101, role: instructor}\n")
    assert [(r.username, r.role) for r in roster.rows] == [("eve", "student"), ("f@x.org", "teacher")]


def test_semicolon_csv_from_a_spreadsheet_with_a_byte_order_mark():
    roster = parse_roster("\ufeffusername;course;role\ngina;ml101;student\n")
    assert [(r.username, r.course) for r in roster.rows] == [("gina", "ml101")]


@pytest.mark.parametrize("row, error", [
    ("x,,ml101,wizard", "unknown role 'wizard'"),
    (",,ml101,student", "no username and no email"),
    (",not-an-email,ml101,student", "is not an email address"),
    ("x,,,student", "no course"),
    ("x,,ML 101!,student", "is not a course name"),
    ("x,,../etc,student", "is not a course name"),
    ("a/b,,ml101,student", "not a valid username"),
    ("..,,ml101,student", "not a valid username"),
    ("x" * 256 + ",,ml101,student", "longer than 255"),
    ("x,,ml101,student,extra,fields", "fields but the header has"),
])
def test_bad_rows_are_reported_with_their_line_and_the_rest_parsed(row, error):
    roster = parse_roster(f"username,email,course,role\nok,,ml101,student\n{row}\n")
    assert [r.username for r in roster.rows] == ["ok"]
    assert len(roster.bad) == 1 and roster.bad[0].line == 3 and error in roster.bad[0].error


def test_a_person_twice_in_one_course_with_two_roles_is_a_bad_row_an_exact_repeat_is_not():
    roster = parse_roster("username,course,role\na,ml101,student\na,ml101,student\na,ml101,teacher\n")
    assert len(roster.rows) == 1
    assert [b.line for b in roster.bad] == [4] and "already in ml101 as student (line 2)" in roster.bad[0].error


@pytest.mark.parametrize("text, error", [
    ("", "empty"),
    ("name,class\nx,y\n", "needs a header row"),
    ("username,course,course\nx,y,z\n", "twice"),
    ("- [unclosed", "needs a header row"),
    ("roster: 5", "a YAML roster is a list"),
])
def test_unreadable_rosters_are_refused_as_a_whole(text, error):
    with pytest.raises(RosterError, match=error):
        parse_roster(text)


def test_yaml_rows_with_unknown_fields_or_wrong_types_are_bad_rows():
    roster = parse_roster("- {username: a, course: ml101, rol: ta}\n- {username: [b], course: ml101}\n- 7\n")
    assert [b.line for b in roster.bad] == [1, 2, 3]
    assert "unknown field 'rol'" in roster.bad[0].error and "must be text" in roster.bad[1].error


def test_too_many_rows_is_refused():
    with pytest.raises(RosterError, match="more than"):
        parse_roster("username,course\n" + "".join(f"u{i},c\n" for i in range(5001)))


# --- plans ----------------------------------------------------------------------------------
def test_first_import_creates_users_groups_and_members():
    roster = parse_roster(CSV)
    p = plan(roster.rows, users={"alice"}, courses={}, groups=set())
    assert p.users_to_create == ["bob@uni.example", "carol", "dave"]
    assert p.groups_to_create == ["ml101", "nlp"]
    assert p.add["ml101"] == ["alice", "bob@uni.example", "carol"]
    assert p.courses["ml101"].teachers == {"alice"} and p.courses["ml101"].tas == {"carol"}
    assert p.courses["ml101"].students == {"bob@uni.example"}


def applied(p) -> dict[str, Course]:
    return dict(p.courses)


def test_re_import_of_the_same_roster_changes_nothing():
    rows = parse_roster(CSV).rows
    first = plan(rows, users=set(), courses={})
    again = plan(rows, users={r.username for r in rows}, courses=applied(first), groups=first.groups_to_create)
    assert again.empty, again.to_json()


def test_re_import_with_changes_adds_removes_and_changes_roles_only_in_named_courses():
    rows = parse_roster(CSV).rows
    first = plan(rows, users=set(), courses={})
    changed = parse_roster("username,course,role\nalice,ml101,teacher\ncarol,ml101,student\nzoe,ml101,student\n").rows
    p = plan(changed, users={r.username for r in rows}, courses=applied(first), groups=["ml101", "nlp"])
    assert p.users_to_create == ["zoe"] and p.groups_to_create == []
    assert p.add == {"ml101": ["zoe"]} and p.remove == {"ml101": ["bob@uni.example"]}
    assert p.roles["ml101"] == [{"user": "carol", "from": "ta", "to": "student"}]
    assert "nlp" not in p.courses  # not in this roster: left as it is
    assert p.properties_changed("ml101")


def test_a_course_keeps_its_settings_across_imports():
    current = {"ml101": Course("ml101", {"a"}, title="ML", max_session_hours=3.0, materials=False)}
    p = plan(parse_roster("username,course\na,ml101\nb,ml101\n").rows, users={"a"}, courses=current)
    c = p.courses["ml101"]
    assert (c.title, c.max_session_hours, c.materials) == ("ML", 3.0, False)


def test_a_plain_group_of_the_course_name_is_not_taken_over():
    with pytest.raises(ValueError, match="not a course"):
        plan(parse_roster("username,course\na,admins\n").rows, users=set(), courses={}, groups={"admins"})


def test_course_from_a_group_model_round_trips_its_properties():
    course = Course("ml101", {"a", "b", "c"}, {"a"}, {"b"}, "ML", 2.5, False)
    model = {"name": "ml101", "users": ["a", "b", "c"], "properties": {PROPERTY: course.properties(), "x": 1}}
    again = course_from_group(model)
    assert again == course and again.students == {"c"} and again.role_of("b") == "ta"
    assert course_from_group({"name": "admins", "users": [], "properties": {}}) is None


@pytest.mark.parametrize("body, error", [
    ({"max_session_hours": 0}, "above 0"),
    ({"max_session_hours": True}, "above 0"),
    ({"max_session_hours": "3"}, "above 0"),
    ({"max_session_hours": 10_000}, "at most"),
    ({"materials": "yes"}, "true or false"),
    ({"title": 5}, "text"),
    ({"colour": "red"}, "unknown course setting"),
])
def test_bad_course_settings(body, error):
    with pytest.raises(ValueError, match=error):
        check_settings(body)


def test_good_course_settings():
    assert check_settings({"title": " ML ", "max_session_hours": 3, "materials": False}) == {
        "title": "ML", "max_session_hours": 3.0, "materials": False}
    assert check_settings({"max_session_hours": None}) == {"max_session_hours": None}

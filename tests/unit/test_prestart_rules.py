"""Reservation pre-start (hub/gpus/prestart.py) and start at login: which servers, when the
window opens and closes, claims, GPU seats and idle clocks from the claim, the console's rounds
(start, audit, stop the unused with a reason), the hub-side claim and the login's choice."""
import asyncio
import json
from types import SimpleNamespace

import pytest
from console_fakes import GPUS, FakeHub, container, make_console

from hub.common import profiles
from hub.courses import PROPERTY
from hub.gpus import prestart as p
from hub.gpus.model import Holder, Intent, Reservation
from hub.hub_process.patches import login_start, prestart_claim
from hub.service_process.console.course_actions import CourseDesk
from hub.service_process.reclaim.service import Reclaimer
from hub.usage.accounting import Seat
from hub.usage.reconcile import UsageKeeper

NOW = 1_800_000_000.0


def reservation(prestart=600.0, start=NOW + 300, end=NOW + 3900, gpus=("GPU-0000", "GPU-0001"), rid="r-1"):
    return Reservation(rid, "lab", tuple(gpus), start, end, "", prestart)


# ---- pure decisions ------------------------------------------------------------------------------

def test_the_window_opens_prestart_before_and_closes_grace_after_the_start_never_after_the_end():
    r = reservation()
    assert p.window(r, 900) == (NOW - 300, NOW + 1200)
    assert p.window(r, 0) == (NOW - 300, NOW + 300)
    assert p.window(reservation(end=NOW + 600), 3600)[1] == NOW + 600


def test_due_once_while_the_window_is_open_and_only_with_a_prestart():
    r = reservation()
    assert p.due([r], NOW - 301, 900) == []
    assert p.due([r], NOW - 300, 900) == [r]
    assert p.due([r], NOW + 1199, 900) == [r]
    assert p.due([r], NOW + 1200, 900) == []
    assert p.due([r], NOW, 900, done=["r-1"]) == []
    assert p.due([reservation(prestart=0)], NOW + 300, 900) == []


def test_the_gpus_are_held_for_the_course_from_the_prestart_on():
    r = reservation()
    intent = Intent(reservations=[r])
    assert intent.reserved_for(NOW - 301) == {}
    assert intent.reserved_for(NOW - 300) == {"GPU-0000": "lab", "GPU-0001": "lab"}
    assert not r.active(NOW - 300) and r.holds(NOW - 300)
    assert Intent(reservations=[reservation(prestart=0)]).reserved_for(NOW) == {}


def test_a_reservation_keeps_its_prestart_in_the_intent_and_writes_none_without_one():
    r = reservation()
    assert Reservation.from_json(r.to_json()) == r
    assert "prestart" not in reservation(prestart=0).to_json()
    for bad in (-1, True, "600", 4 * 3600 + 1):
        with pytest.raises(ValueError, match="prestart"):
            Reservation.from_json({**r.to_json(), "prestart": bad})


def test_only_a_roster_that_fits_the_reserved_seats_is_prestarted_and_running_ones_are_left():
    r = reservation()
    assert p.seats(r, {}) == 2 and p.seats(r, {"GPU-0001": 4}) == 5
    assert p.who(["b", "a"], 2, running=[]) == (["a", "b"], "")
    assert p.who(["b", "a"], 2, running=["a"]) == (["b"], "")
    users, reason = p.who(["a", "b", "c"], 2, running=[])
    assert users == [] and "3 members for 2 reserved seats" in reason
    assert p.who([], 2, running=[]) == ([], "the course has no members")


def test_a_claim_counts_only_for_the_start_it_follows():
    record = p.Record("a", "", "r-1", "lab", since=NOW, until=NOW + 900)
    assert p.claimed_at(record, {}) is None
    assert p.claimed_at(record, {("a", ""): NOW - 3600}) is None  # a claim of an earlier start
    assert p.claimed_at(record, {("a", ""): NOW + 42}) == NOW + 42
    assert p.to_stop([record], {}, NOW + 899) == []
    assert p.to_stop([record], {}, NOW + 900) == [record]
    assert p.to_stop([record], {("a", ""): NOW + 42}, NOW + 900) == []


def test_gpu_time_and_idle_clocks_begin_at_the_claim():
    record = p.Record("a", "", "r-1", "lab", since=NOW, until=NOW + 900)
    assert p.seat_start(None, {}, NOW + 5) == (True, None)  # not pre-started: as before
    assert p.seat_start(record, {}, NOW + 5) == (False, None)  # nobody came yet: no seat
    assert p.seat_start(record, {("a", ""): NOW + 300}, NOW + 5) == (True, NOW + 300)
    assert p.is_record_of(record, "c1", NOW + 5)  # no container written yet: by its start time
    assert not p.is_record_of(record, "c1", NOW - 600)  # an older container of the same server
    assert p.is_record_of(p.Record("a", "", "r-1", "lab", NOW, NOW + 900, "c1"), "c1", NOW - 600)
    assert not p.is_record_of(p.Record("a", "", "r-1", "lab", NOW, NOW + 900, "c1"), "c2", NOW + 5)


def test_the_files_keep_records_done_reservations_and_claims(tmp_path):
    f = p.PrestartFile(tmp_path / p.FILE)
    a, b = p.Record("a", "", "r-1", "lab", NOW, NOW + 900), p.Record("b", "", "r-1", "lab", NOW, NOW + 900)
    f.put(a, b)
    f.mark("r-1", {"at": NOW, "started": 2})
    assert f.all() == {("a", ""): a, ("b", ""): b} and f.done() == {"r-1": {"at": NOW, "started": 2}}
    assert f.pop(("a", "")) == a and f.pop(("a", "")) is None and set(f.all()) == {("b", "")}
    claims = tmp_path / p.CLAIMS_FILE
    p.write_claim(claims, ("b", ""), NOW + 10)
    assert p.read_claims(claims) == {("b", ""): NOW + 10}
    assert p.counts(f.all().values(), p.read_claims(claims)) == {"r-1": {"prestarted": 1, "claimed": 1}}
    (tmp_path / p.FILE).write_text("not json")
    assert f.all() == {} and f.done() == {}


def test_the_course_profile_is_the_first_that_names_the_course_a_gpu_one_first():
    def prof(slug, gpu, groups):
        return profiles.Profile(slug, slug, "", gpu, 0, 0, ("img",), frozenset(groups))
    offered = [prof("cpu", False, []), prof("lab-cpu", False, ["lab"]), prof("lab-gpu", True, ["lab"])]
    assert profiles.course_profile(offered, "lab").slug == "lab-gpu"
    assert profiles.course_profile(offered[:2], "lab").slug == "lab-cpu"
    assert profiles.course_profile(offered, "other") is None


# ---- accounting and gpu-reclaim -------------------------------------------------------------------

def test_usage_counts_no_seat_before_the_claim_and_one_from_it(tmp_path):
    f = p.PrestartFile(tmp_path / p.FILE)
    f.put(p.Record("a", "", "r-1", "lab", NOW, NOW + 900, "ca"))
    keeper = SimpleNamespace(prestart=f)
    seats = [Seat("ca", "GPU-0000", "a", "", NOW + 2), Seat("cz", "GPU-0002", "z", "", NOW + 3)]
    claimed_only = UsageKeeper.claimed_only
    assert asyncio.run(claimed_only(keeper, seats)) == [seats[1]]
    p.write_claim(tmp_path / p.CLAIMS_FILE, ("a", ""), NOW + 120)
    out = asyncio.run(claimed_only(keeper, seats))
    assert [(s.user, s.start) for s in out] == [("a", NOW + 120), ("z", NOW + 3)]
    # a later, ordinary start of the same server (another container) counts from its own start
    later = Seat("cb", "GPU-0000", "a", "", NOW + 5000)
    assert asyncio.run(claimed_only(keeper, [later])) == [later]


def test_gpu_reclaim_does_not_judge_an_unclaimed_server_and_judges_a_claimed_one_from_the_claim(tmp_path):
    f = p.PrestartFile(tmp_path / p.FILE)
    f.put(p.Record("a", "", "r-1", "lab", NOW, NOW + 900, "ca"))
    reclaimer = SimpleNamespace(prestart=f, container_of={("a", ""): "ca", ("z", ""): "cz"})
    a, z = Holder("a", "", NOW + 2), Holder("z", "", NOW + 3)
    claimed = asyncio.run(Reclaimer.claimed_holders(reclaimer))
    assert claimed(a) is None and claimed(z) == z
    p.write_claim(tmp_path / p.CLAIMS_FILE, ("a", ""), NOW + 120)
    claimed = asyncio.run(Reclaimer.claimed_holders(reclaimer))
    assert claimed(a) == Holder("a", "", NOW + 120)


# ---- the console's rounds -------------------------------------------------------------------------

PROFILES = """profiles:
  - {slug: cpu, name: CPU, gpu: false}
  - {slug: lab, name: Lab, gpu: true, groups: [lab]}
"""


class PrestartHub(FakeHub):
    """The hub's pre-start route: a server with a GPU container, ready at once."""

    def __init__(self, engine):
        super().__init__(engine)
        self.prestarted: list[tuple[str, str]] = []

    async def prestart_server(self, user, reservation):
        self.prestarted.append((user, reservation))
        n = len(self.engine.containers)
        self.engine.containers.append(container(f"c-{user}", GPUS[n].uuid, user))
        return 202, "starting"

    async def user(self, name):
        model = self.users.get(name)
        if model is None:
            return None
        servers = {s: v for (u, s), v in (await self.active_servers()).items() if u == name}
        return {**model, "servers": servers}


class ListingEngine:
    """The fake engine, with container listings that carry their labels (as the engine's do)."""

    def __init__(self, engine):
        self.engine = engine

    async def __call__(self, method, *args, **kwargs):
        if method == "containers":
            wanted = dict(f.split("=", 1) for f in kwargs.get("filters", {}).get("label", []))
            return [{"Id": c["Id"], "Labels": c["Config"]["Labels"]} for c in self.engine.containers
                    if all(c["Config"]["Labels"].get(k) == v for k, v in wanted.items())]
        return await self.engine(method, *args, **kwargs)


def lab_desk(tmp_path, members=("alice", "bob")):
    console, engine, _hub = make_console(tmp_path)
    hub = PrestartHub(engine)
    console.hub, console.docker = hub, ListingEngine(engine)
    clock = [NOW]
    console.clock = lambda: clock[0]
    hub.groups["lab"] = list(members)
    hub.properties["lab"] = {PROPERTY: {"teachers": [], "tas": [], "materials": True, "title": "Lab One"}}
    (tmp_path / "profiles.yaml").write_text(PROFILES)
    desk = CourseDesk(console, prestart_minutes=10, prestart_grace_minutes=15,
                      profiles_file=str(tmp_path / "profiles.yaml"))
    return desk, hub, engine, clock


def audit(tmp_path):
    return [json.loads(line) for line in (tmp_path / "gpu-audit.jsonl").read_text().splitlines()]


def test_the_console_prestarts_the_roster_and_stops_the_unused_at_the_windows_close(tmp_path):
    desk, hub, engine, clock = lab_desk(tmp_path)

    async def go():
        reply = await desk.reserve({"course": "lab", "gpus": 2, "start": NOW + 300, "end": NOW + 3900}, "admin", "t")
        assert reply["reservation"]["prestart_minutes"] == 10  # the setting's default
        rid = reply["reservation"]["id"]
        clock[0] = NOW - 301
        assert (await desk.prestart_round())["started"] == []  # not yet: opens at NOW - 300
        clock[0] = NOW - 300
        assert (await desk.prestart_round())["started"] == [rid]
        await asyncio.gather(*desk._prestarting)
        assert (await desk.prestart_round())["started"] == []  # once
        assert sorted(hub.prestarted) == [("alice", rid), ("bob", rid)]
        records = desk.prestarts.all()
        assert {k: r.container for k, r in records.items()} == {("alice", ""): "c-alice", ("bob", ""): "c-bob"}
        assert {r.until for r in records.values()} == {NOW + 300 + 900}
        entry = audit(tmp_path)[-1]
        assert entry["action"] == "prestart" and entry["started"] == 2 and entry["who"] == "gpu-console"
        # alice comes; bob does not
        p.write_claim(desk.claims_file, ("alice", ""), NOW + 60)
        listing = await desk.listing()
        (r,) = listing["courses"][0]["reservations"]
        assert r["prestart"] == {"done": True, "started": 2, "failed": 0, "reason": "", "prestarted": 2, "claimed": 1}
        clock[0] = NOW + 1199
        assert (await desk.prestart_round())["stopped"] == []
        clock[0] = NOW + 1200
        stopped = (await desk.prestart_round())["stopped"]
        assert [s["user"] for s in stopped] == ["bob"] and hub.stopped == [("bob", "")]
        assert "stopped because it was not used" in desk.reasons.get(("bob", ""))
        assert "Lab One (lab)" in desk.reasons.get(("bob", ""))
        assert set(desk.prestarts.all()) == {("alice", "")}
        entry = audit(tmp_path)[-1]
        assert entry["action"] == "prestart-unclaimed" and [s["user"] for s in entry["stopped"]] == ["bob"]
        # alice stops her server later: her record goes, a later start of hers is an ordinary one
        await hub.stop_server("alice", "")
        await desk.prestart_round()
        assert desk.prestarts.all() == {}

    asyncio.run(go())


def test_a_roster_larger_than_the_seats_gets_no_prestart_and_the_audit_says_why(tmp_path):
    desk, hub, engine, clock = lab_desk(tmp_path, members=("alice", "bob", "carol"))

    async def go():
        await desk.reserve({"course": "lab", "gpus": 2, "start": NOW + 300, "end": NOW + 3900}, "admin", "t")
        await desk.prestart_round()
        await asyncio.gather(*desk._prestarting)

    asyncio.run(go())
    assert hub.prestarted == []
    entry = audit(tmp_path)[-1]
    assert entry["action"] == "prestart" and "3 members for 2 reserved seats" in entry["detail"]


def test_a_reservation_with_prestart_zero_starts_nothing(tmp_path):
    desk, hub, engine, clock = lab_desk(tmp_path)

    async def go():
        await desk.reserve({"course": "lab", "gpus": 2, "start": NOW + 60, "end": NOW + 3900,
                            "prestart_minutes": 0}, "admin", "t")
        return await desk.prestart_round()

    assert asyncio.run(go())["started"] == [] and hub.prestarted == []


# ---- the hub side ---------------------------------------------------------------------------------

def test_the_owners_first_visit_claims_a_prestarted_server_once(tmp_path):
    f = p.PrestartFile(tmp_path / p.FILE)
    assert not prestart_claim.claim(tmp_path, ("a", ""), NOW)  # nothing pre-started: nothing written
    assert not (tmp_path / p.CLAIMS_FILE).exists()
    f.put(p.Record("a", "", "r-1", "lab", NOW, NOW + 900))
    assert prestart_claim.claim(tmp_path, ("a", ""), NOW + 30)
    assert not prestart_claim.claim(tmp_path, ("a", ""), NOW + 90)  # the first visit only
    assert p.read_claims(tmp_path / p.CLAIMS_FILE) == {("a", ""): NOW + 30}
    user = SimpleNamespace(spawners={"": SimpleNamespace(oauth_client_id="jupyterhub-user-a"),
                                     "x": SimpleNamespace(oauth_client_id="jupyterhub-user-a-x")})
    assert prestart_claim.owned_server(user, "jupyterhub-user-a-x") == "x"
    assert prestart_claim.owned_server(user, "jupyterhub-user-b") is None
    assert prestart_claim.owned_server(None, "jupyterhub-user-a") is None


def test_login_starts_only_a_user_with_exactly_one_profile():
    def prof(slug, groups=(), images=("img",)):
        return profiles.Profile(slug, slug, "", False, 0, 0, tuple(images), frozenset(groups))

    def spawner(offered, form="", groups=(), admin=False, profiles_file="profiles.yaml"):
        async def get_options_form():
            return form
        return SimpleNamespace(get_options_form=get_options_form, profiles_file=profiles_file,
                               load_profiles=lambda: offered, user_groups=lambda: set(groups), is_admin=admin)

    one = [prof("cpu"), prof("lab", ["lab"])]
    assert asyncio.run(login_start.single_choice(spawner(one)))
    assert not asyncio.run(login_start.single_choice(spawner(one, groups=["lab"])))  # two to choose from
    assert not asyncio.run(login_start.single_choice(spawner(one, admin=True)))
    assert not asyncio.run(login_start.single_choice(spawner([prof("cpu", images=("a", "b"))])))  # an image to choose
    assert not asyncio.run(login_start.single_choice(spawner([prof("lab", ["lab"])])))  # none offered
    # a spawner without profiles: Start starts at once when it has no options form
    assert asyncio.run(login_start.single_choice(spawner([], profiles_file="")))
    assert not asyncio.run(login_start.single_choice(spawner([], form="<form>", profiles_file="")))

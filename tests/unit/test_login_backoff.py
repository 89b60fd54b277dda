"""Back-off after failed logins (hub/login_backoff.py): pure, with the clock passed in."""
from hub.login_backoff import Limits, LoginBackoff, client_address

LIMITS = Limits(pair_free=5, address_free=30, user_free=20, base=1.0, cap=300.0)


def storm(backoff, user, address, tries, now=0.0, step=0.01):
    """Tries the way a script would: a try during a wait is refused, unchecked (not a failure)."""
    refused = 0
    for i in range(tries):
        t = now + i * step
        if backoff.wait(user, address, t):
            refused += 1
        else:
            backoff.failed(user, address, t)
    return refused


def test_a_few_failures_are_free_then_waits_double():
    backoff = LoginBackoff(LIMITS)
    for i in range(4):
        backoff.failed("alice", "10.0.0.9", 0.0)
        assert backoff.wait("alice", "10.0.0.9", 0.0) == 0
    backoff.failed("alice", "10.0.0.9", 0.0)  # the 5th: 1 s
    assert backoff.wait("alice", "10.0.0.9", 0.0) == 1.0
    backoff.failed("alice", "10.0.0.9", 1.0)  # the 6th: 2 s
    assert backoff.wait("alice", "10.0.0.9", 1.0) == 2.0
    assert backoff.wait("alice", "10.0.0.9", 3.5) == 0
    assert backoff.wait("bob", "10.0.0.9", 1.0) == 0  # another user from there: still free


def test_a_storm_of_64_is_mostly_refused_unchecked_and_the_wait_stays_bounded():
    backoff = LoginBackoff(LIMITS)
    refused = storm(backoff, "admin", "203.0.113.7", 64)
    assert refused >= 64 - 6  # 5 free and one that set the first wait within the 0.64 s
    assert backoff.wait("admin", "203.0.113.7", 0.7) <= LIMITS.cap


def test_waits_are_capped_and_expire_however_long_the_storm():
    backoff = LoginBackoff(LIMITS)
    t = 0.0
    for _ in range(200):  # a patient attacker who waits out every block
        t += backoff.wait("admin", "198.51.100.1", t) + 0.001
        backoff.failed("admin", "198.51.100.1", t)
    assert 0 < backoff.wait("admin", "198.51.100.1", t) <= LIMITS.cap
    assert backoff.wait("admin", "198.51.100.1", t + LIMITS.cap + 0.01) == 0


def test_a_distributed_storm_does_not_lock_the_admin_out_of_a_known_address():
    backoff = LoginBackoff(LIMITS)
    backoff.succeeded("admin", "192.0.2.10", 0.0)  # the admin logged in from here before
    for n in range(100):
        storm(backoff, "admin", f"203.0.113.{n}", 3, now=1.0)
    assert backoff.wait("admin", "203.0.113.200", 2.0) > 0  # a new address waits (per user)
    assert backoff.wait("admin", "192.0.2.10", 2.0) == 0  # the admin's own address does not


def test_one_address_guessing_many_users_waits():
    backoff = LoginBackoff(LIMITS)
    for n in range(30):
        backoff.failed(f"student{n}", "203.0.113.5", 0.0)
    assert backoff.wait("student99", "203.0.113.5", 0.0) > 0
    assert backoff.wait("student99", "203.0.113.6", 0.0) == 0


def test_old_failures_are_forgotten_and_success_clears_the_pair():
    backoff = LoginBackoff(LIMITS)
    for _ in range(4):
        backoff.failed("alice", "a", 0.0)
    backoff.failed("alice", "a", LIMITS.forget_after + 10)  # counted from 1 again
    assert backoff.wait("alice", "a", LIMITS.forget_after + 10) == 0
    for _ in range(10):
        backoff.failed("bob", "b", 0.0)
    backoff.succeeded("bob", "b", 600.0)
    assert backoff.wait("bob", "b", 600.0) == 0


def test_tables_are_bounded():
    backoff = LoginBackoff(Limits(table_size=50))
    for n in range(1000):
        backoff.failed(f"u{n}", f"addr{n}", 0.0)
    assert len(backoff._pairs) == len(backoff._addresses) == len(backoff._users) == 50


def test_the_client_address_is_what_the_proxy_saw():
    # the proxy appends the peer it saw; what the client wrote before it is not believed
    assert client_address("1.2.3.4, 203.0.113.9", "172.18.0.3") == "203.0.113.9"
    assert client_address(None, "172.18.0.3") == "172.18.0.3"
    # behind Caddy: Caddy's own entry is skipped
    assert client_address("203.0.113.9, 172.18.0.5", "172.18.0.3", frozenset({"172.18.0.5"})) == "203.0.113.9"

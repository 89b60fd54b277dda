"""The network rules users' servers live under (hub/netguard.py): pure parts and the applier
against a recorded iptables."""
from types import SimpleNamespace

from hub.netguard import FORWARD_CHAIN, INPUT_CHAIN, Firewall, Layout, layout_from_engine, restore_text, rules

LAYOUT = Layout("br-abc", "172.30.0.0/16", {"hub": ("172.30.0.3",), "proxy": ("172.30.0.2",),
                                              "caddy": ("172.30.0.4",), "prometheus": ("172.30.0.5",)})


def test_users_reach_the_hub_api_and_the_proxy_port_and_nothing_else_on_the_bridge():
    fwd = rules(LAYOUT)[FORWARD_CHAIN]
    bridge = "-i br-abc -o br-abc"
    assert f"{bridge} -s 172.30.0.3/32 -j RETURN" in fwd and f"{bridge} -s 172.30.0.2/32 -j RETURN" in fwd
    assert f"{bridge} -d 172.30.0.3/32 -p tcp -m tcp --dport 8081 -j RETURN" in fwd
    assert f"{bridge} -d 172.30.0.2/32 -p tcp -m tcp --dport 8000 -j RETURN" in fwd
    assert not any("--dport 8001" in r or "--dport 10102" in r for r in fwd)
    # only Prometheus reaches the console's port
    assert [r for r in fwd if "10101" in r] == [
        f"{bridge} -s 172.30.0.5/32 -d 172.30.0.3/32 -p tcp -m tcp --dport 10101 -j RETURN"]
    assert fwd[-1] == f"{bridge} -j DROP"  # everything else on the bridge: users to users included
    # link-local is dropped before any allowance, for everyone on the bridge
    assert fwd.index("-i br-abc -d 169.254.0.0/16 -j DROP") < fwd.index(f"{bridge} -s 172.30.0.3/32 -j RETURN")


def test_closed_egress_lets_only_our_services_out():
    fwd = rules(LAYOUT, egress="closed")[FORWARD_CHAIN]
    assert fwd[-1] == "-i br-abc ! -o br-abc -j DROP"
    assert "-i br-abc ! -o br-abc -s 172.30.0.3/32 -j RETURN" in fwd  # the hub (OAuth)
    assert not any("! -o br-abc" in r for r in rules(LAYOUT)[FORWARD_CHAIN])


def test_users_reach_no_service_of_the_host_but_dns():
    inp = rules(LAYOUT)[INPUT_CHAIN]
    assert inp[-1] == "-i br-abc -j DROP"
    assert "-i br-abc -p udp -m udp --dport 53 -j RETURN" in inp


def test_without_our_services_running_the_bridge_is_closed_not_open():
    fwd = rules(Layout("br-x", "10.0.0.0/24"))[FORWARD_CHAIN]
    assert not any("RETURN" in r and "ESTABLISHED" not in r for r in fwd)


def test_restore_text_replaces_only_our_chains():
    text = restore_text(rules(LAYOUT))
    assert text.startswith("*filter\n:GPUHUB-FWD - [0:0]\n:GPUHUB-IN - [0:0]\n") and text.endswith("COMMIT\n")
    assert "DOCKER-USER" not in text and not any(line.startswith(("-F", "-X")) for line in text.splitlines())


class FakeIptables:
    def __init__(self, has_docker_user=("iptables-nft",)):
        self.calls, self.has = [], has_docker_user
        self.jumps = set()

    def __call__(self, argv, **kwargs):
        self.calls.append(argv)
        ok = 0
        if "-L" in argv:
            ok = 0 if argv[0] in self.has else 1
        elif "-C" in argv:
            ok = 0 if (argv[3], argv[5]) in self.jumps else 1
        elif "-I" in argv:
            self.jumps.add((argv[3], argv[6]))
        return SimpleNamespace(returncode=ok, stdout="", stderr="")


def test_the_firewall_uses_the_backend_that_holds_dockers_chains_and_jumps_once():
    run = FakeIptables(has_docker_user=("iptables-legacy",))
    firewall = Firewall(run=run)
    assert firewall.binary == "iptables-legacy"
    firewall.apply(rules(LAYOUT))
    firewall.apply(rules(LAYOUT))
    assert ["iptables-legacy-restore", "-w", "--noflush"] in run.calls
    inserts = [c for c in run.calls if "-I" in c]
    assert inserts == [["iptables-legacy", "-w", "-I", "DOCKER-USER", "1", "-j", "GPUHUB-FWD"],
                       ["iptables-legacy", "-w", "-I", "INPUT", "1", "-j", "GPUHUB-IN"]]


def test_layout_reads_compose_services_and_treats_anything_else_as_a_user():
    network = {"Id": "0123456789abcdef", "Options": {}, "IPAM": {"Config": [{"Subnet": "172.30.0.0/16"}]}}

    def container(service, ip, project="gpuhub", created_by_compose=True, oneoff="False"):
        labels = {"com.docker.compose.project": project, "com.docker.compose.service": service}  # the image's too
        if created_by_compose:
            labels.update({"com.docker.compose.config-hash": "abc", "com.docker.compose.oneoff": oneoff})
        return {"Labels": labels, "NetworkSettings": {"Networks": {"gpuhub-net": {"IPAddress": ip}}}}

    api = SimpleNamespace(inspect_network=lambda name: network,
                          containers=lambda filters: [
                              container("hub", "172.30.0.3"), container("proxy", "172.30.0.2"),
                              container("singleuser", "172.30.0.9"),
                              # `docker run` of the hub's image: its labels say hub, compose did not make it
                              container("hub", "172.30.0.10", created_by_compose=False),
                              container("hub", "172.30.0.11", oneoff="True")])  # `compose run hub`
    layout = layout_from_engine(SimpleNamespace(api=api), "gpuhub-net", "gpuhub")
    assert layout == Layout("br-0123456789ab", "172.30.0.0/16", {"hub": ("172.30.0.3",), "proxy": ("172.30.0.2",)})


def test_turning_isolation_off_takes_every_jump_and_chain_out():
    run = FakeIptables()
    firewall = Firewall(run=run)
    firewall.apply(rules(LAYOUT))
    real = run.__call__

    def deleting(argv, **kwargs):  # -D succeeds while the jump is there
        if "-D" in argv:
            found = (argv[3], argv[5]) in run.jumps
            run.jumps.discard((argv[3], argv[5]))
            run.calls.append(argv)
            return SimpleNamespace(returncode=0 if found else 1, stdout="", stderr="")
        return real(argv, **kwargs)
    firewall.run = deleting
    firewall.remove()
    assert not run.jumps
    assert ["iptables-nft", "-w", "-X", "GPUHUB-FWD"] in run.calls and ["iptables-nft", "-w", "-X", "GPUHUB-IN"] in run.calls

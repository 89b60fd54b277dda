import pytest
from tornado import web

from hub.common.profiles import choose, load_profiles, options_from_form, render_form
from hub.hub_process.spawner.progress import pull_summary

IMG, MEM, CPU = "gpuhub/pytorch-notebook:1", 8 * 2**30, 2.0

GOOD = """
profiles:
  - slug: gpu
    name: GPU <b>big</b>
    description: one GPU
    default: true
  - slug: cpu
    name: CPU
    gpu: false
    mem_limit: 4G
    cpu_limit: 1
    images: [a/b:1, a/c:2]
  - slug: course-a
    name: Course A
    groups: [course-a]
"""


def profiles():
    return load_profiles(GOOD, IMG, MEM, CPU)


def test_defaults_come_from_env_settings():
    gpu, cpu, course = profiles()
    assert (gpu.gpu, gpu.mem_limit, gpu.cpu_limit, gpu.images) == (True, MEM, CPU, (IMG,))
    assert (cpu.gpu, cpu.mem_limit, cpu.cpu_limit, cpu.images) == (False, 4 * 2**30, 1.0, ("a/b:1", "a/c:2"))
    assert course.groups == {"course-a"}


@pytest.mark.parametrize("text,message", [
    ("profiles: []", "non-empty list"),
    ("nope: 1", "non-empty list"),
    ("profiles: [", "not valid YAML"),
    ("profiles: [{slug: A, name: x}]", "slug 'A'"),
    ("profiles: [{slug: a}]", "needs a name"),
    ("profiles: [{slug: a, name: x, mem_limit: lots}]", r"profiles\[0\] \(a\).*mem_limit"),
    ("profiles: [{slug: a, name: x, cpu_limit: 0}]", "cpu_limit"),
    ("profiles: [{slug: a, name: x, images: []}]", "images must be"),
    ("profiles: [{slug: a, name: x, groups: staff}]", "groups must be"),
    ("profiles: [{slug: a, name: x, gpu: maybe}]", "gpu must be true or false"),
    ("profiles: [{slug: a, name: x, image: y}]", "unknown key"),
    ("profiles: [{slug: a, name: x}, {slug: a, name: y}]", "unique"),
    ("profiles: [{slug: a, name: x, default: true}, {slug: b, name: y, default: true}]", "at most one"),
])
def test_bad_files_are_refused_with_the_fix(text, message):
    with pytest.raises(ValueError, match=message):
        load_profiles(text, IMG, MEM, CPU)


def test_empty_options_give_the_default_profile():
    profile, image = choose(profiles(), {}, set(), admin=False)
    assert (profile.slug, image) == ("gpu", IMG)


def test_choose_profile_and_image_from_its_list():
    profile, image = choose(profiles(), {"profile": "cpu", "image": "a/c:2"}, set(), admin=False)
    assert (profile.slug, image) == ("cpu", "a/c:2")


@pytest.mark.parametrize("options,status,message", [
    ({"profile": "cpu", "image": "evil/image:1"}, 400, "not allowed for profile 'cpu'"),
    ({"profile": "gpu", "image": "a/b:1"}, 400, "not allowed"),
    ({"profile": "nope"}, 400, "not offered to you"),
    ({"profile": "course-a"}, 400, "not offered to you"),  # not in the group
    ({"profile": "gpu", "environment": {"X": "1"}}, 400, "unknown server option"),
    ({"device_requests": [{}]}, 400, "unknown server option"),
    ({"mem_limit": "64G"}, 400, "unknown server option"),
    (["gpu"], 400, "JSON object"),
])
def test_forged_options_are_refused(options, status, message):
    with pytest.raises(web.HTTPError) as err:
        choose(profiles(), options, set(), admin=False)
    assert err.value.status_code == status and message in err.value.log_message


def test_group_members_and_admins_see_group_profiles():
    assert choose(profiles(), {"profile": "course-a"}, {"course-a"}, admin=False)[0].slug == "course-a"
    assert choose(profiles(), {"profile": "course-a"}, set(), admin=True)[0].slug == "course-a"


def test_no_visible_profile_is_403():
    only_course = load_profiles("profiles: [{slug: c, name: C, groups: [x]}]", IMG, MEM, CPU)
    with pytest.raises(web.HTTPError) as err:
        choose(only_course, {}, set(), admin=False)
    assert err.value.status_code == 403


def test_form_fields():
    assert options_from_form({"profile": ["cpu"], "image": ["a/b:1"]}) == {"profile": "cpu", "image": "a/b:1"}
    for bad in ({"profile": ["a", "b"]}, {"cmd": ["sh"]}):
        with pytest.raises(web.HTTPError):
            options_from_form(bad)


def test_form_shows_free_gpus_and_escapes():
    html = render_form(profiles()[:2], gpus_total=4, gpus_free=1)
    assert "<strong>1 of 4</strong> GPUs free right now" in html
    assert "GPU &lt;b&gt;big&lt;/b&gt;" in html and "<b>big</b>" not in html
    assert 'value="gpu" checked' in html and 'name="image"' in html
    assert "(none free now)" in render_form(profiles()[:1], 4, 0)
    assert "no GPUs" in render_form(profiles()[:1], 0, 0)


def test_pull_summary_counts_layers_and_bytes():
    progress, message = pull_summary("x:1", {"a": (50, 100), "b": (100, 300), "c": (0, 600)}, {"b"})
    assert message == "Pulling image x:1: 1 of 3 layers, 0 MB of 0 MB"
    assert progress == 10 + int(50 * 350 / 1000)
    _, message = pull_summary("x:1", {"a": (10**8, 2 * 10**8)}, set())
    assert message.endswith("0 of 1 layers, 100 MB of 200 MB")


def test_a_gpu_profile_may_carry_its_own_reclaim_policy():
    from hub.gpus.reclaim_policy import ReclaimOverride

    text = GOOD.replace("    default: true\n", "    default: true\n    reclaim: {timeout: 7200, grace: 900}\n", 1)
    text += "  - slug: demo\n    name: Demo\n    reclaim: off\n"
    gpu, cpu, course, demo = load_profiles(text, IMG, MEM, CPU)
    assert gpu.reclaim == ReclaimOverride(timeout=7200.0, grace=900.0)
    assert demo.reclaim == ReclaimOverride(off=True) and course.reclaim is None and cpu.reclaim is None
    with pytest.raises(ValueError, match=r"profiles\[1\] \(cpu\): reclaim is about idle GPUs"):
        load_profiles(GOOD.replace("    cpu_limit: 1\n", "    cpu_limit: 1\n    reclaim: off\n"), IMG, MEM, CPU)
    with pytest.raises(ValueError, match=r"profiles\[0\] \(gpu\): reclaim: unknown key"):
        load_profiles(GOOD.replace("    default: true\n", "    default: true\n    reclaim: {idle: 5}\n"), IMG, MEM, CPU)


def test_a_profile_may_turn_the_warm_kernel_off_or_name_its_imports():
    text = GOOD.replace("    default: true\n", "    default: true\n    warm_kernel: [torch, numpy.linalg]\n", 1)
    text += ("  - slug: plain\n    name: Plain\n    warm_kernel: off\n"
             "  - slug: words\n    name: Words\n    warm_kernel: 'torch, pandas'\n"
             "  - slug: bare\n    name: Bare\n    warm_kernel: []\n")
    gpu, cpu, course, plain, words, bare = load_profiles(text, IMG, MEM, CPU)
    assert (gpu.warm_kernel, gpu.warm_imports) == (True, ("torch", "numpy.linalg"))
    assert (cpu.warm_kernel, cpu.warm_imports) == (None, None)  # the hub's settings
    assert (plain.warm_kernel, plain.warm_imports) == (False, None)
    assert words.warm_imports == ("torch", "pandas") and bare.warm_imports == ()
    for bad in ("[\"os; import shutil\"]", "5", "'torch; rm'"):
        with pytest.raises(ValueError, match=r"profiles\[0\] \(gpu\): warm_kernel must be on, off or a list"):
            load_profiles(GOOD.replace("    default: true\n", f"    default: true\n    warm_kernel: {bad}\n", 1),
                          IMG, MEM, CPU)

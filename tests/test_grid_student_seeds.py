"""Several student seeds reuse one teacher, seed 0 keeps its job keys, and the cpu plans read the seeds from one place."""
from crt_bench.grid.jobs import GridSpec
from crt_bench.grid.reproduce import STUDENT_SEEDS, plan_for


def _spec(**kw):
    return GridSpec(methods=["gaussian", "smoothmix", "crt"], archs=["convnext_atto"], teacher_archs=["resnet20"], **kw)


def test_student_seeds_share_one_teacher_and_keep_seed0_keys():
    before = {j.key for j in _spec().jobs()}
    jobs = _spec(student_seeds=[0, 1, 2]).jobs()
    keys = {j.key for j in jobs}
    assert before <= keys and len(keys) == len(before) + 2 * 3  # seeds 1 and 2 of each student method
    teachers = [j for j in jobs if j.method == "smoothmix" and j.arch == "resnet20"]
    assert len(teachers) == 1 and teachers[0].seed == 0
    crt = [j for j in jobs if j.method == "crt"]
    assert sorted(j.seed for j in crt) == [0, 1, 2] and all(j.teacher.key == teachers[0].key for j in crt)
    assert jobs[0] == teachers[0]  # the teacher comes first


def test_cpu_plans_take_their_student_seeds_from_the_setting():
    assert STUDENT_SEEDS["cpu"] == [0, 1]  # the default's verdict covers seed-to-seed variation
    for profile, seeds in STUDENT_SEEDS.items():
        plan = plan_for(profile)
        assert plan.grid.student_seeds == seeds
        students = [j for j in plan.grid.jobs() if j.method == "crt"]
        assert sorted({j.seed for j in students}) == seeds
        assert len({j.teacher.key for j in students}) == len(plan.grid.teacher_archs)  # one teacher per arch
    assert all("student seeds 0, 1" in plan_for(p).describe() for p in ("cpu", "cpu-full"))
    cpu = plan_for("cpu").jobs()
    certified = [j for j in cpu if j.certify and j.method in ("smoothmix", "crt") and j.arch != "resnet20"]
    assert sorted((j.method, j.arch, j.seed) for j in certified) == sorted(
        (m, a, s) for m in ("smoothmix", "crt") for a in ("mobilenetv4_conv_small", "efficientvit_b0") for s in (0, 1))

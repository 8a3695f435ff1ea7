"""Run configuration: recipe -> profile -> flags, schedules, validation."""
import pytest

from crt_bench.config.run import RunConfig
from crt_bench.config.schedule import lr_at_epoch, scaled_milestones
from crt_bench.core.errors import CrtBenchError
from crt_bench.train.resolve import resolve_run_config


def test_paper_profile_uses_each_methods_recipe():
    crt = resolve_run_config("crt", "resnet110", profile="paper", teacher="some-run")
    assert (crt.dataset, crt.epochs, crt.batch_size, crt.lr, crt.milestones) == ("cifar10", 200, 128, 0.1, (100, 150))
    gauss = resolve_run_config("gaussian", "resnet110", profile="paper")
    assert (gauss.epochs, gauss.batch_size, gauss.milestones) == (150, 256, (50, 100))


def test_flags_override_profile_and_schedule_keeps_its_shape():
    cfg = resolve_run_config("crt", "resnet20", profile="paper", teacher="t", epochs=20, batch_size=64, lr=0.05)
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.milestones) == (20, 64, 0.05, (10, 15))
    assert scaled_milestones((100, 150), 200, 4) == (2, 3)
    # short runs: milestones stay strictly increasing and each leaves an epoch to act on
    assert scaled_milestones((50, 100), 150, 2) == (1,)
    assert scaled_milestones((100, 150), 200, 3) == (2,)
    assert scaled_milestones((50, 100), 150, 4) == (1, 3)
    assert scaled_milestones((50, 100), 150, 1) == ()


def test_step_schedule():
    assert [lr_at_epoch(0.1, (2, 3), 0.1, e) for e in range(4)] == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_config_json_round_trip():
    cfg = resolve_run_config("gaussian", "tiny_cnn", profile="smoke", seed=3)
    assert RunConfig.from_json(cfg.to_json()) == cfg


def test_a_config_stored_with_the_old_profile_steps_key_reads_as_trace_steps():
    cfg = resolve_run_config("gaussian", "tiny_cnn", profile="smoke", trace_steps=3)
    old = cfg.to_json().replace('"trace_steps"', '"profile_steps"')
    assert '"profile_steps": 3' in old and RunConfig.from_json(old) == cfg


@pytest.mark.parametrize("kwargs,match", [
    (dict(sigma=0.0), "sigma must be > 0"),
    (dict(sigma=-0.5), "sigma must be > 0"),
    (dict(epochs=-1), "epochs must be >= 1"),
    (dict(epochs=0), "epochs must be >= 1"),
    (dict(batch_size=0), "batch size must be >= 1"),
    (dict(lr=-0.1), "learning rate"),
    (dict(profile="huge"), "unknown profile"),
    (dict(dataset="svhn"), "unknown dataset"),
    (dict(teacher="x"), "takes no teacher"),
])
def test_bad_settings_fail_clearly(kwargs, match):
    with pytest.raises(CrtBenchError, match=match):
        resolve_run_config("gaussian", "resnet20", **kwargs)


def test_crt_needs_a_teacher():
    with pytest.raises(CrtBenchError, match="needs a certifiably robust teacher"):
        resolve_run_config("crt", "resnet20")

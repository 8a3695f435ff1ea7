"""Bad input to every command that takes a profile or a device: one ``error:`` line, exit 2, nothing printed
before it and nothing written (no results folder, no banner, no torchrun relaunch)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_cli import assert_user_error, cli

from crt_bench.cli.options import PLAN_PROFILES, PROBE_PROFILES
from crt_bench.config.profiles import PROFILES
from crt_bench.grid.reproduce import PLANS
from crt_bench.timing.probe import PROBES

UNKNOWN_PROFILE = {
    "run": ["run", "--arch", "tiny_cnn"],
    "sweep": ["sweep", "--arch", "tiny_cnn"],
    "chain": ["chain", "--teacher", "some-run", "--arch", "tiny_cnn"],
    "time": ["time", "--arch", "tiny_cnn"],
    "proxy": ["proxy"],
    "reproduce": ["reproduce"],
}

ASKS_FOR_CUDA = {
    "run": ["run", "--arch", "tiny_cnn"],
    "run --nproc 2": ["run", "--arch", "tiny_cnn", "--nproc", "2"],  # before torchrun starts two processes
    "certify": ["certify", "some-run"],
    "sweep": ["sweep", "--arch", "tiny_cnn"],
    "chain": ["chain", "--teacher", "some-run", "--arch", "tiny_cnn"],
    "time": ["time", "--arch", "tiny_cnn"],
    "proxy": ["proxy"],
    "reproduce gpu-smoke": ["reproduce", "--profile", "gpu-smoke"],
    "reproduce auto": ["reproduce"],
}


@pytest.mark.parametrize("command", list(UNKNOWN_PROFILE))
def test_an_unknown_profile_is_one_line_before_any_work(command: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    code, out, err = cli(*UNKNOWN_PROFILE[command], "--profile", "quick", "--results", results)
    line = assert_user_error(code, err, "'--profile'", "'quick' is not one of", "smoke", "gpu-smoke")
    assert out == "" and not results.exists()
    valid = PLANS if command == "reproduce" else PROBES if command == "time" else PROFILES
    assert all(name in line for name in valid)


@pytest.mark.parametrize("command", list(ASKS_FOR_CUDA))
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_cuda_device_without_a_gpu_is_one_line_before_any_work(command: str, device: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # so on a GPU machine too
    results = tmp_path / "results"
    code, out, err = cli(*ASKS_FOR_CUDA[command], "--device", device, "--results", results)
    assert_user_error(code, err, f"--device {device}", "no CUDA GPU is visible", "--device cpu")
    assert out == "" and not results.exists()


def test_a_device_name_torch_does_not_know_or_a_missing_gpu_index_is_one_line(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    code, out, err = cli("run", "--arch", "tiny_cnn", "--device", "gpu", "--results", results)
    assert_user_error(code, err, "unknown --device 'gpu'", "cuda:N")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    code, out, err = cli("time", "--arch", "tiny_cnn", "--device", "cuda:2", "--results", results)
    assert_user_error(code, err, "--device cuda:2", "2 visible GPU(s)", "cuda:0..cuda:1")
    assert not results.exists()


def test_profile_help_and_list_name_every_profile() -> None:
    for command, names in (("run", PROFILES), ("sweep", PROFILES), ("chain", PROFILES), ("proxy", PROFILES),
                           ("time", PROBES), ("reproduce", PLANS)):
        code, out, _ = cli(command, "--help")
        assert code == 0
        assert all(name in out for name in names), (command, out)
    code, out, _ = cli("list", "profiles")
    assert code == 0 and all(name in out for name in PROFILES)
    assert "gpu-smoke" in PROFILES and "gpu-smoke" in PROBES and "gpu-smoke" in PLANS


def test_the_cli_choices_of_time_and_reproduce_are_the_probes_and_plans() -> None:
    """The CLI names them without importing timing.probe or grid.reproduce (torch): the lists must agree."""
    assert PROBE_PROFILES == tuple(PROBES)
    assert PLAN_PROFILES == ("auto", *PLANS)


@pytest.mark.parametrize("command", [["reproduce", "--profile", "gpu-smoke"], ["reproduce", "--profile", "paper"],
                                     ["sweep", "--arch", "tiny_cnn", "--profile", "paper"],
                                     ["chain", "--teacher", "some-run", "--arch", "tiny_cnn", "--profile", "imagenet"]])
def test_a_gpu_profile_without_a_gpu_is_one_line_unless_device_cpu_says_so(command: list[str], tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from crt_bench.cli.options import check_inputs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # so on a GPU machine too
    results = tmp_path / "results"
    code, out, err = cli(*command, "--results", results)
    assert_user_error(code, err, "is sized for a GPU", "--device cpu")
    assert out == "" and not results.exists()
    check_inputs(device="cpu", profile=command[command.index("--profile") + 1])  # the CPU mode, asked for
    check_inputs(device="auto", profile="cpu")

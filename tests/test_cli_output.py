"""What the command line prints and how it exits: JSON output, -q/-v, parse-time checks of choices, numbers
and the results folder, exit 1 for failed jobs, text printed as written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_cli import assert_user_error, cli

from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.registry import list_methods
from crt_bench.models.registry import list_archs

FIXED_STORE = Path(__file__).parent / "data" / "fixed_store"


@pytest.fixture
def fixed(tmp_path: Path) -> Path:
    """A copy of the fixed store (summary writes summary.csv into it)."""
    return Path(shutil.copytree(FIXED_STORE, tmp_path / "results"))


@pytest.mark.parametrize("what, names", [("archs", lambda: [a.name for a in list_archs()]),
                                         ("methods", lambda: [m.name for m in list_methods()])])
def test_list_json_holds_every_entry(what: str, names) -> None:
    code, out, err = cli("list", what, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == names()
    if what == "methods":
        crt = next(r for r in rows if r["name"] == "crt")
        assert crt["needs_teacher"] is True and crt["recipe"]["epochs"] == 200


def test_list_profiles_json() -> None:
    code, out, _ = cli("list", "profiles", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["smoke"]["dataset"] == "synthetic" and rows["paper"]["certify"]["n"] > 0


def test_summary_json_is_the_table(fixed: Path) -> None:
    code, table, _ = cli("summary", fixed)
    code_json, out, _ = cli("summary", fixed, "--json")
    assert code == code_json == 0
    rows = json.loads(out)
    assert rows and {"run_id", "method", "arch", "acr"} <= set(rows[0])
    assert all(r["run_id"].removeprefix("import:") in table for r in rows)


def test_leaderboard_json_is_the_csv(fixed: Path, tmp_path: Path) -> None:
    code, out, err = cli("leaderboard", fixed, "--out", tmp_path / "lb", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert rows and {"rank", "method", "ACR"} <= set(rows[0])
    assert len(rows) == len((tmp_path / "lb" / "leaderboard.csv").read_text().splitlines()) - 1


def test_sweep_dry_run_json_lists_the_jobs(tmp_path: Path) -> None:
    code, out, err = cli("sweep", "--method", "gaussian", "--method", "crt", "--arch", "tiny_cnn", "--teacher-arch",
                         "resnet20", "--dry-run", "--json", "--results", tmp_path / "r")
    assert code == 0, err
    jobs = json.loads(out)
    assert {(j["method"], j["arch"]) for j in jobs} == {("smoothmix", "resnet20"), ("gaussian", "tiny_cnn"),
                                                       ("crt", "tiny_cnn")}
    crt = next(j for j in jobs if j["method"] == "crt")
    assert crt["teacher"] and crt["profile"] == "smoke" and "sbatch" not in crt


def test_quiet_hides_info_lines_and_verbose_shows_debug(fixed: Path) -> None:
    _, _, err = cli("summary", fixed)
    assert "written" in err
    code, out, err = cli("-q", "summary", fixed)
    assert code == 0 and err == "" and out
    code, _, err = cli("-v", "plot", fixed, "--out", fixed.parent / "plots")
    assert code == 0 and "written" in err and "REPORT.md" in err  # report.build's DEBUG lines


@pytest.mark.parametrize("argv, words", [
    (["certify", "some-run", "--shards", "0"], ["'--shards'", "1"]),
    (["certify", "some-run", "--precision", "fp8"], ["'--precision'", "'fp8'", "bf16"]),
    (["run", "--method", "nope"], ["'--method'", "'nope'", "smoothmix"]),
    (["run", "--arch", "resnet21"], ["'--arch'", "'resnet21'"]),
    (["sweep", "--executor", "pbs"], ["'--executor'", "'pbs'", "slurm"]),
    (["run", "--no-such-flag"], ["--no-such-flag", "crt-bench run --help"]),
])
def test_bad_choices_and_numbers_are_one_line_at_parse_time(argv: list[str], words: list[str], tmp_path: Path) -> None:
    results = tmp_path / "results"
    code, out, err = cli(*argv, "--results", results)
    assert_user_error(code, err, *words)
    assert out == "" and not results.exists()


def test_an_alias_is_accepted_at_parse_time(tmp_path: Path) -> None:
    code, out, err = cli("sweep", "--method", "gaussian", "--arch", "convnext", "--dry-run", "--results", tmp_path)
    assert code == 0, err
    assert "convnext_atto" in out


def test_results_that_is_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    target = tmp_path / "results"
    target.write_text("not a folder")
    for argv in (["run", "--arch", "tiny_cnn"], ["certify", "x"], ["time"], ["proxy"], ["chain", "--teacher", "x",
                 "--arch", "tiny_cnn"], ["import-log", str(target), "--name", "x"]):
        code, out, err = cli(*argv, "--results", target)
        assert_user_error(code, err, "is a file, not a folder")


def test_a_full_results_disk_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crt_bench.store import checks

    monkeypatch.setattr(checks.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 9, 2**20))
    code, _, err = cli("run", "--arch", "tiny_cnn", "--results", tmp_path / "results")
    assert_user_error(code, err, "1 MiB free")
    assert not (tmp_path / "results").exists()


def test_an_unwritable_results_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    code, _, err = cli("certify", "x", "--results", tmp_path)
    assert_user_error(code, err, "not writable (Read-only file system)")


def test_reading_commands_need_an_existing_folder(tmp_path: Path) -> None:
    for argv in (["summary", tmp_path / "none"], ["plot", tmp_path / "none"], ["leaderboard", tmp_path / "none"],
                 ["export-log", "c", tmp_path / "x.tsv", "--results", tmp_path / "none"]):
        code, _, err = cli(*argv)
        assert_user_error(code, err, "does not exist")
    assert not (tmp_path / "none").exists()


def test_text_prints_as_written(tmp_path: Path) -> None:
    """Run ids and paths that look like rich markup or emoji codes (':A:') are printed verbatim."""
    code, _, err = cli("certify", "[x]:A:run", "--results", tmp_path)
    assert_user_error(code, err, "'[x]:A:run'", only_line=False)


def test_failed_jobs_exit_1_not_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The input was fine, the work failed: exit 1, one error line naming the count."""
    from crt_bench.grid import execute

    def fails(job, results):
        raise CrtBenchError("broke on purpose")

    monkeypatch.setattr(execute, "execute_job", fails)
    code, _, err = cli("sweep", "--method", "gaussian", "--arch", "tiny_cnn", "--epochs", "1", "--no-certify",
                       "--executor", "inline", "--device", "cpu", "--results", tmp_path / "results")
    assert code == 1, err
    assert [line for line in err.splitlines() if line.startswith("error:")][-1].startswith("error: 1 of 1 jobs failed")


def test_version_and_completion_are_offered() -> None:
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("crt-bench ")
    code, out, _ = cli("--help")
    assert code == 0 and "--install-completion" in out and "-q, --quiet" in out

"""The ``crt-bench`` command line, driven through ``crt_bench.cli.app.main`` as a user would drive it."""
from __future__ import annotations

import contextlib
import io
import random
import shutil
import urllib.error
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REFERENCE_LOGS, patch_loss, tables_snapshot, tree_snapshot

from crt_bench.cli.app import main
from crt_bench.store.cohen_log import read_cohen_log
from crt_bench.store.store import ResultsStore

COHEN_025 = REFERENCE_LOGS / "cohen_resnet110_sigma0.25_skip20.tsv"
CERT_ARGS = ["--n0", "20", "--n", "100", "--subset", "range:0:5"]
FAST_RUN = ["--profile", "smoke", "--epochs", "1", "--train-limit", "256", "--device", "cpu", "--no-progress"]


def cli(*argv: str | Path) -> tuple[int, str, str]:
    """Run ``crt-bench ARGV``; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no output"
    return lines[-1].strip()


def assert_user_error(code: int, stderr: str, *words: str, only_line: bool = True) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line (the last), naming ``words``."""
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    if only_line:
        assert len(lines) == 1, stderr
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    return errors[0]


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One CLI-trained gaussian run and one certification of it, shared by the tests below (read-only)."""
    root = tmp_path_factory.mktemp("cli-results")
    code, out, err = cli("run", "--method", "gaussian", "--arch", "tiny_cnn", *FAST_RUN, "--results", root)
    assert code == 0, err
    run_out = out
    run_id = out.splitlines()[-1]
    code, out, err = cli("certify", run_id, *CERT_ARGS, "--results", root)  # with its default progress bar
    assert code == 0, err
    cert_id = out.splitlines()[-1]
    return {"root": root, "run_id": run_id, "cert_id": cert_id, "run_stdout": run_out, "cert_stdout": out}


@pytest.fixture
def results_copy(cli_results: dict[str, object], tmp_path: Path) -> Path:
    dest = tmp_path / "results"
    shutil.copytree(cli_results["root"], dest)
    return dest


# -- list ---------------------------------------------------------------------------------------------

def test_list_archs() -> None:
    code, out, _ = cli("list", "archs")
    assert code == 0
    for name in ("resnet20", "resnet110", "resnet18", "convnext_atto"):
        assert name in out


def test_list_methods_and_profiles() -> None:
    code, out, _ = cli("list", "methods")
    assert code == 0 and "gaussian" in out and "crt" in out
    code, out, _ = cli("list", "profiles")
    assert code == 0 and all(p in out for p in ("smoke", "cpu", "paper"))
    code, _, err = cli("list", "gadgets")
    assert_user_error(code, err, "gadgets", "archs")


# -- run -> certify -> summary -> export -----------------------------------------------------------------

def test_run_prints_run_id_last_and_certify_accepts_it(cli_results: dict[str, object]) -> None:
    root, run_id, cert_id = Path(cli_results["root"]), cli_results["run_id"], cli_results["cert_id"]
    store = ResultsStore(root)
    assert run_id.startswith("gaussian-tiny_cnn-synthetic-") and run_id == run_id.strip() and " " not in run_id
    assert cli_results["run_stdout"].endswith(run_id + "\n")
    assert cli_results["cert_stdout"].endswith(cert_id + "\n")
    assert store.get_run(run_id)["status"] == "finished"
    assert (root / "runs" / run_id / "model.pt").is_file()
    certs = store.read("certify")
    rows = certs[certs["cert_id"] == cert_id]
    for col in ("idx", "label", "predict", "radius", "correct", "seconds", "n0", "n", "alpha", "sigma"):
        assert col in rows.columns
    assert sorted(rows["idx"]) == [0, 1, 2, 3, 4]
    assert set(rows["n0"]) == {20} and set(rows["n"]) == {100}
    assert set(rows["sigma"]) == {0.25} and set(rows["run_id"]) == {run_id}
    assert (rows["correct"] == (rows["predict"] == rows["label"])).all()
    assert (rows["radius"] >= 0).all() and (rows.loc[rows["predict"] == -1, "radius"] == 0).all()
    assert cert_id.startswith(run_id + "@N100")


def test_crt_run_accepts_cli_run_id_as_teacher(results_copy: Path, cli_results: dict[str, object]) -> None:
    teacher = cli_results["run_id"]
    code, out, err = cli("run", "--method", "crt", "--arch", "tiny_cnn", "--teacher", teacher, *FAST_RUN,
                         "--train-limit", "128", "--results", results_copy)
    assert code == 0, err
    student = last_line(out)
    row = ResultsStore(results_copy).get_run(student)
    assert row["method"] == "crt" and row["teacher_run_id"] == teacher and row["teacher_arch"] == "tiny_cnn"


def test_certify_accepts_a_model_path(results_copy: Path, cli_results: dict[str, object]) -> None:
    model = results_copy / "runs" / str(cli_results["run_id"]) / "model.pt"
    code, out, err = cli("certify", model, "--n0", "10", "--n", "50", "--subset", "range:3:5", "--no-progress",
                         "--results", results_copy)
    assert code == 0, err
    cert_id = last_line(out)
    rows = ResultsStore(results_copy).read("certify")
    assert sorted(rows.loc[rows["cert_id"] == cert_id, "idx"]) == [3, 4]


def test_summary_prints_table_and_writes_csv(results_copy: Path, cli_results: dict[str, object]) -> None:
    code, out, err = cli("summary", results_copy)
    assert code == 0, err
    assert "ACR" in out and "tiny_cnn" in out
    table = pd.read_csv(results_copy / "summary.csv")
    row = table[table["cert_id"] == cli_results["cert_id"]].iloc[0]
    certs = ResultsStore(results_copy).read("certify")
    mine = certs[certs["cert_id"] == cli_results["cert_id"]]
    assert row["n_images"] == 5 and row["method"] == "gaussian" and row["arch"] == "tiny_cnn"
    assert row["acr"] == pytest.approx((mine["radius"] * mine["correct"]).mean())


def test_import_log_then_summary_has_its_acr(tmp_path: Path) -> None:
    results = tmp_path / "results"
    code, _, err = cli("import-log", COHEN_025, "--name", "cohen-0.25", "--sigma", "0.25", "--results", results)
    assert code == 0, err
    code, out, err = cli("summary", results)
    assert code == 0, err
    assert "cohen-0.25" in out
    table = pd.read_csv(results / "summary.csv")
    row = table[table["cert_id"] == "cohen-0.25"].iloc[0]
    raw = pd.read_csv(COHEN_025, sep="\t")  # recomputed straight from the file, independently of crt_bench
    assert row["n_images"] == len(raw) == 500
    assert row["acr"] == pytest.approx((raw["radius"] * raw["correct"]).mean(), abs=1e-9)
    assert row["acc@0.50"] == pytest.approx(((raw["correct"] == 1) & (raw["radius"] >= 0.5)).mean())
    assert row["sigma"] == 0.25 and row["method"] == "imported"
    # The same name twice is refused, and the store is left alone.
    before = tables_snapshot(results)
    code, _, err = cli("import-log", COHEN_025, "--name", "cohen-0.25", "--results", results)
    assert_user_error(code, err, "cohen-0.25", "already exists")
    assert tables_snapshot(results) == before


def test_export_log_round_trips(results_copy: Path, cli_results: dict[str, object], tmp_path: Path) -> None:
    out_file = tmp_path / "out.tsv"
    code, _, err = cli("export-log", cli_results["cert_id"], out_file, "--results", results_copy)
    assert code == 0, err
    back = read_cohen_log(out_file).sort_values("idx").reset_index(drop=True)
    certs = ResultsStore(results_copy).read("certify")
    mine = certs[certs["cert_id"] == cli_results["cert_id"]].sort_values("idx").reset_index(drop=True)
    assert back["idx"].tolist() == mine["idx"].tolist()
    assert back["label"].tolist() == mine["label"].tolist()
    assert back["predict"].tolist() == mine["predict"].tolist()
    assert back["correct"].tolist() == mine["correct"].tolist()
    assert back["radius"].to_numpy() == pytest.approx(mine["radius"].to_numpy(), rel=5e-3, abs=1e-12)
    assert out_file.read_text().splitlines()[0] == "idx\tlabel\tpredict\tradius\tcorrect\ttime"


def test_resume_of_finished_run_via_cli(results_copy: Path, cli_results: dict[str, object]) -> None:
    before = tables_snapshot(results_copy)
    code, _, err = cli("run", "--resume", cli_results["run_id"], "--no-progress", "--results", results_copy)
    assert_user_error(code, err, "already finished")
    assert tables_snapshot(results_copy) == before


# -- bad inputs: exit 2, one line, nothing written ---------------------------------------------------------

BASE = ["run", "--arch", "tiny_cnn", *FAST_RUN]

BAD_RUNS = {
    "unknown method": (["run", "--method", "gausian", "--arch", "tiny_cnn", *FAST_RUN],
                       ["'gausian'", "gaussian", "crt"], True),
    "unknown arch": (["run", "--arch", "resnet21", *FAST_RUN],
                     ["'resnet21'", "resnet20", "resnet110", "convnext_atto"], True),
    "unknown dataset": ([*BASE, "--dataset", "svhn"], ["'svhn'", "cifar10", "synthetic"], True),
    "sigma zero": ([*BASE, "--sigma", "0"], ["sigma", "> 0"], True),
    "sigma negative": ([*BASE, "--sigma", "-1"], ["sigma", "-1"], True),
    "crt without teacher": (["run", "--method", "crt", "--arch", "tiny_cnn", *FAST_RUN], ["needs a certifiably robust teacher", "crt-bench proxy"], True),
    "unknown hyper-parameter": ([*BASE, "--set", "temperature=2"], ["temperature", "gaussian"], True),
    "unknown crt hyper-parameter": (["run", "--method", "crt", "--teacher", "x", "--arch", "tiny_cnn", *FAST_RUN,
                                     "--set", "ce_weigth=0.5"], ["ce_weigth", "ce_weight"], True),
    "bad hyper-parameter value": (["run", "--method", "crt", "--teacher", "x", "--arch", "tiny_cnn", *FAST_RUN,
                                   "--set", "ce_weight=lots"], ["ce_weight", "lots"], True),
    "malformed --set": ([*BASE, "--set", "ce_weight"], ["KEY=VALUE", "'ce_weight'"], True),
    "unknown profile": (["run", "--arch", "tiny_cnn", "--profile", "quick"], ["'quick'", "smoke"], True),
    "teacher not found": (["run", "--method", "crt", "--arch", "tiny_cnn", "--teacher", "no-such-run-id", *FAST_RUN],
                          ["'no-such-run-id'", "neither a run id"], False),
    "resume unknown run": (["run", "--resume", "no-such-run-id"], ["no-such-run-id"], True),
    "unknown teacher precision": ([*BASE, "--teacher-precision", "half"], ["--teacher-precision", "'half'", "bf16"],
                                  True),
    "negative trace steps": ([*BASE, "--trace-steps", "-2"], ["--trace-steps", "-2"], True),
    "negative trace steps, old flag": ([*BASE, "--profile-steps", "-2"], ["--trace-steps", "-2"], True),
    "tf32 on a cpu": ([*BASE, "--tf32"], ["--tf32", "compute capability 8.0", "device is cpu"], True),
    "tf32 on a cpu, data-parallel": ([*BASE, "--tf32", "--nproc", "2"], ["--tf32", "device is cpu"], True),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_run_inputs(case: str, results_copy: Path) -> None:
    argv, words, only_line = BAD_RUNS[case]
    before = tree_snapshot(results_copy)
    code, out, err = cli(*argv, "--results", results_copy)
    assert_user_error(code, err, *words, only_line=only_line)
    assert out == ""
    assert tree_snapshot(results_copy) == before


def test_missing_cifar_data_names_data_dir(results_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    empty = tmp_path / "empty"
    empty.mkdir()
    before = tree_snapshot(results_copy)
    code, _, err = cli(*BASE, "--dataset", "cifar10", "--data-dir", empty, "--results", results_copy)
    line = assert_user_error(code, err, "--data-dir", "CIFAR-10", str(empty), only_line=False)
    assert len(line) > 200  # long, and still one line: the console must not wrap it
    assert tree_snapshot(results_copy) == before


def test_corrupt_checkpoint_to_certify(results_copy: Path, tmp_path: Path) -> None:
    before = tree_snapshot(results_copy)
    for name, data in (("random.pt", random.Random(11).randbytes(2048)), ("empty.pt", b"")):
        bad = tmp_path / name
        bad.write_bytes(data)
        code, out, err = cli("certify", bad, *CERT_ARGS, "--no-progress", "--results", results_copy)
        assert_user_error(code, err, str(bad), "corrupt", only_line=False)
        assert out == ""
    # A truncated copy of a real model file.
    good = next((results_copy / "runs").glob("*/model.pt")).read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(good[: len(good) // 3])
    code, _, err = cli("certify", bad, *CERT_ARGS, "--no-progress", "--results", results_copy)
    assert_user_error(code, err, str(bad), only_line=False)
    assert tree_snapshot(results_copy) == before


@pytest.mark.parametrize("spec, words", [
    ("range:5:2", ["'range:5:2'", "A < B", "'range:A:B'"]),  # printed as written: ':A:' is no emoji
    ("every:3", ["'every:3'", "skip:K"]),
    ("skip:0", ["'skip:0'", "at least 1"]),
])
def test_bad_subset_spec(spec: str, words: list[str], results_copy: Path, cli_results: dict[str, object]) -> None:
    before = tree_snapshot(results_copy)
    code, out, err = cli("certify", cli_results["run_id"], "--n0", "10", "--n", "20", "--subset", spec,
                         "--no-progress", "--results", results_copy)
    assert_user_error(code, err, "bad subset", *words, only_line=False)
    assert out == ""
    assert tree_snapshot(results_copy) == before


def test_certify_unknown_run_and_bad_numbers(results_copy: Path, cli_results: dict[str, object]) -> None:
    before = tree_snapshot(results_copy)
    code, _, err = cli("certify", "no-such-run", "--no-progress", "--results", results_copy)
    assert_user_error(code, err, "'no-such-run'", only_line=False)
    code, _, err = cli("certify", cli_results["run_id"], "--n", "0", "--no-progress", "--results", results_copy)
    assert_user_error(code, err, "'--n'", "'0'", only_line=False)
    code, _, err = cli("certify", cli_results["run_id"], "--alpha", "1.5", "--no-progress", "--results", results_copy)
    assert_user_error(code, err, "alpha", only_line=False)
    assert tree_snapshot(results_copy) == before


def test_malformed_tsv_names_the_line(results_copy: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
                   "0\t3\t3\t0.5\t1\t1.0\n"
                   "1\t4\t4\tbig\t1\t1.0\n")
    before = tree_snapshot(results_copy)
    code, _, err = cli("import-log", bad, "--name", "broken", "--results", results_copy)
    assert_user_error(code, err, str(bad), "line 3", "radius")
    no_header = tmp_path / "no_header.tsv"
    no_header.write_text("0\t3\t3\t0.5\t1\t1.0\n")
    code, _, err = cli("import-log", no_header, "--name", "broken", "--results", results_copy)
    assert_user_error(code, err, "line 1", "header")
    code, _, err = cli("import-log", tmp_path / "missing.tsv", "--name", "broken", "--results", results_copy)
    assert_user_error(code, err, "missing.tsv")
    code, _, err = cli("import-log", COHEN_025, "--name", "a/b", "--results", results_copy)
    assert_user_error(code, err, "'a/b'")
    assert tree_snapshot(results_copy) == before


def test_summary_and_export_errors(tmp_path: Path, results_copy: Path) -> None:
    code, _, err = cli("summary", tmp_path / "nowhere")
    assert_user_error(code, err, "nowhere", "does not exist")
    empty = tmp_path / "empty-results"
    empty.mkdir()
    code, _, err = cli("summary", empty)
    assert_user_error(code, err, "no certification results")
    assert list(empty.iterdir()) == []
    before = tree_snapshot(results_copy)
    code, _, err = cli("export-log", "no-such-cert", tmp_path / "x.tsv", "--results", results_copy)
    assert_user_error(code, err, "'no-such-cert'")
    assert not (tmp_path / "x.tsv").exists()
    assert tree_snapshot(results_copy) == before


def test_error_message_is_not_parsed_as_markup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Paths and values in messages are shown verbatim, even when they look like rich markup."""
    weird = tmp_path / "[bold]x[/bold]"
    code, _, err = cli("summary", weird)
    assert_user_error(code, err, str(weird))


def test_model_file_written_by_cli_loads_with_weights_only(cli_results: dict[str, object]) -> None:
    path = Path(cli_results["root"]) / "runs" / str(cli_results["run_id"]) / "model.pt"
    obj = torch.load(path, map_location="cpu", weights_only=True)
    assert obj["format"] == "crt-bench/1" and obj["dataset"] == "synthetic"


def test_interrupted_cli_run_names_its_id_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    with monkeypatch.context() as m:
        patch_loss(m, fail_at_epoch=1, exc=KeyboardInterrupt())
        code, out, err = cli("run", "--arch", "tiny_cnn", *FAST_RUN, "--epochs", "2", "--results", results)
    assert code == 130 and "Traceback" not in err
    run_id = next((results / "runs").iterdir()).name
    assert run_id in err and f"--resume {run_id}" in err  # the user learns which run to resume
    assert ResultsStore(results).get_run(run_id)["status"] == "interrupted"
    # Certifying the unfinished run points at --resume rather than failing obscurely.
    code, _, err = cli("certify", run_id, *CERT_ARGS, "--no-progress", "--results", results)
    assert_user_error(code, err, run_id, "--resume", only_line=False)
    code, out, err = cli("run", "--resume", run_id, "--no-progress", "--results", results)
    assert code == 0, err
    assert last_line(out) == run_id
    assert ResultsStore(results).get_run(run_id)["status"] == "finished"


def test_model_file_for_another_arch_is_one_line(results_copy: Path, tmp_path: Path,
                                                 cli_results: dict[str, object]) -> None:
    """A model file whose weights do not fit its declared arch: a (multi-line) torch error, shown as one line."""
    obj = torch.load(results_copy / "runs" / str(cli_results["run_id"]) / "model.pt", weights_only=True)
    obj["arch"] = "resnet20"
    bad = tmp_path / "mislabelled.pt"
    torch.save(obj, bad)
    before = tree_snapshot(results_copy)
    code, _, err = cli("certify", bad, *CERT_ARGS, "--no-progress", "--results", results_copy)
    assert_user_error(code, err, str(bad), "resnet20", only_line=False)
    code, _, err = cli("certify", cli_results["run_id"], "--sigma", "0", *CERT_ARGS, "--no-progress",
                       "--results", results_copy)
    assert_user_error(code, err, "sigma", only_line=False)
    assert tree_snapshot(results_copy) == before


def test_reproduce_with_a_tiny_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``reproduce``: teachers -> students -> certify -> timing -> plots, resumable (tiny models, debug executor)."""
    import dataclasses

    from crt_bench.config import profiles
    from crt_bench.config.certify import CertifyConfig
    from crt_bench.grid import reproduce
    from crt_bench.grid.jobs import GridSpec

    smoke = profiles.PROFILES["smoke"]
    tiny = dataclasses.replace(smoke, certify=CertifyConfig(n0=10, n=50, alpha=0.001, batch=50,
                                                                    subset="range:0:3"))
    monkeypatch.setitem(profiles.PROFILES, "smoke", tiny)
    grid = GridSpec(methods=["gaussian", "smoothmix", "crt"], archs=["tiny_cnn"], profile="smoke",
                    teacher_method="smoothmix", teacher_archs=["tiny_cnn"], epochs=1, train_limit=128,
                    transfer_methods=["crt"])
    plan = reproduce.Plan("smoke", grid, ["tiny_cnn"], "seconds",
                          extra=reproduce.denoised_jobs(["tiny_cnn"], ("mse",), profile="smoke", epochs=1,
                                                        train_limit=128))
    monkeypatch.setattr(reproduce, "plan_for", lambda profile, data_dir=None: plan)
    results, plots = tmp_path / "results", tmp_path / "plots"
    args = ("reproduce", "--profile", "smoke", "--executor", "debug", "--results", results, "--out", plots)
    code, out, err = cli(*args)
    assert code == 0, err
    store = ResultsStore(results)
    runs = store.runs().set_index("method")
    assert sorted(runs.index) == ["crt", "denoised", "gaussian", "smoothmix", "standard"]
    assert runs.loc["denoised", "teacher_run_id"] == runs.loc["standard", "run_id"]
    assert (runs["status"] == "finished").all() and (runs["epochs_done"] == 1).all()
    assert runs.loc["crt", "teacher_run_id"] == runs.loc["smoothmix", "run_id"]
    certs = store.read("certify")
    assert sorted(certs.groupby("cert_id")["idx"].apply(sorted).map(tuple).unique()) == [(0, 1, 2)]
    assert set(certs["run_id"]) == set(runs["run_id"]) - {runs.loc["standard", "run_id"]}  # classifier: not certified
    timing = store.read("timing")
    assert set(timing["method"]) >= {"gaussian", "crt", "smoothadv", "macer", "smoothmix"}
    # Beside the engine's probes, Table 1's methods and standard training in the official scripts' loop.
    paper = timing[timing["protocol"] == "paper"]
    assert set(paper["method"]) == {"gaussian", "smoothadv", "macer", "smoothmix", "standard"}
    assert sorted(paper[paper["method"] == "standard"]["recipe"]) == ["150x256", "200x128"]
    assert (plots / "slowdown.md").is_file() and (plots / "summary.csv").is_file()
    slowdown = (plots / "slowdown.md").read_text()
    assert "engine protocol" in slowdown and "paper protocol" in slowdown
    assert "ACR" in out and "crt" in out and "gaussian" in out
    # The CRT student is also certified by transfer from its teacher's certification, side by side.
    transferred = certs[certs["procedure"] == "transfer"]
    assert set(transferred["run_id"]) == {runs.loc["crt", "run_id"]} and sorted(transferred["idx"]) == [0, 1, 2]
    teacher_cert = certs[(certs["run_id"] == runs.loc["smoothmix", "run_id"])]["cert_id"].iloc[0]
    assert set(transferred["transfer_from"]) == {teacher_cert}
    summary = pd.read_csv(plots / "summary.csv")
    assert sorted(summary[summary["method"] == "crt"]["certification"]) == ["CERTIFY", "transfer"]
    side = pd.read_csv(plots / "certificate_transfer.csv")
    assert list(side["student"]) == ["tiny_cnn"] and side["images"].iloc[0] == 3
    report = (plots / "REPORT.md").read_text()
    assert "## Certificate transfer" in report
    # Denoised smoothing beside CRT per student, and every certified model's cost on both axes.
    assert "### Beside CRT: denoised smoothing" in report and "Denoised smoothing (mse)" in report
    beside = report.split("### Beside CRT: denoised smoothing")[1].split("\n## ")[0]
    assert "| student | method | seed | images |" in beside and "lowest training seed" in beside
    assert all(line.split("|")[3].strip() == "0" for line in beside.splitlines() if "Denoised smoothing (mse)" in line)
    costs = pd.read_csv(plots / "measured_costs.csv")
    assert {"Denoised smoothing (mse)", "SmoothMix"} <= set(costs["line"]) and (costs["certify_hours"] > 0).all()
    # Started again: nothing is retrained, re-certified or re-timed.
    sizes = {p: p.stat().st_size for p in (results / "tables").rglob("*.parquet")}
    code, out, err = cli(*args)
    assert code == 0, err
    assert {p: p.stat().st_size for p in (results / "tables").rglob("*.parquet")} == sizes


def test_certify_precision_flag_is_recorded(results_copy: Path, cli_results: dict[str, object]) -> None:
    code, out, err = cli("certify", cli_results["run_id"], "--n0", "20", "--n", "100", "--subset", "range:0:2",
                         "--precision", "bf16", "--no-progress", "--results", results_copy)
    assert code == 0, err
    rows = ResultsStore(results_copy).read("certify")
    rows = rows[rows["cert_id"] == last_line(out)]
    assert set(rows["precision"]) == {"bf16"} and set(rows["noise_dtype"]) == {"float32"}
    code, out, err = cli("certify", cli_results["run_id"], "--precision", "fp8", "--results", results_copy)
    assert code == 2 and "'--precision'" in err and "'fp8' is not one of" in err


@pytest.mark.parametrize("shards", ["1", "2"])
def test_certify_tf32_on_a_cpu_is_refused_before_any_work(shards: str, results_copy: Path,
                                                          cli_results: dict[str, object]) -> None:
    before = tree_snapshot(results_copy)
    code, out, err = cli("certify", cli_results["run_id"], *CERT_ARGS, "--precision", "tf32", "--device", "cpu",
                         "--shards", shards, "--no-progress", "--results", results_copy)
    assert_user_error(code, err, "--precision tf32", "compute capability 8.0", "device is cpu")
    assert out == "" and "shard processes" not in err
    assert tree_snapshot(results_copy) == before


def test_engine_flags_reach_the_run_and_trace_steps_write_a_trace(tmp_path: Path) -> None:
    code, out, err = cli("run", "--method", "gaussian", "--arch", "tiny_cnn", *FAST_RUN, "--no-channels-last",
                         "--trace-steps", "1", "--results", tmp_path)
    assert code == 0, err
    run_id = last_line(out)
    store = ResultsStore(tmp_path)
    row = store.get_run(run_id)
    assert bool(row["channels_last"]) is False and bool(row["compile"]) is False
    assert '"trace_steps": 1' in row["config"] and '"channels_last": false' in row["config"]
    profile = store.run_dir(run_id) / "trace"
    assert (profile / "trace.json").stat().st_size > 0
    assert "1 training step(s)" in (profile / "ops.txt").read_text()
    assert str(profile / "trace.json") in err.replace("\n", "")


def test_reproduce_with_a_failed_job_lists_it_and_reports_the_missing_cells(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed teacher: its student is never started, the run ends with exit 1 naming both, REPORT.md says why."""
    import pdb

    from crt_bench.core.errors import CrtBenchError
    from crt_bench.grid import execute as execute_mod
    from crt_bench.grid import reproduce
    from crt_bench.grid.jobs import GridSpec

    grid = GridSpec(methods=["gaussian", "crt"], archs=["tiny_cnn"], profile="smoke", teacher_method="smoothmix",
                    teacher_archs=["tiny_cnn"], epochs=1, train_limit=64, certify=False)
    plan = reproduce.Plan("smoke", grid, ["tiny_cnn"], "seconds")
    monkeypatch.setattr(reproduce, "plan_for", lambda profile, data_dir=None: plan)
    monkeypatch.setattr(pdb, "post_mortem", lambda *a, **k: None)  # submitit's debug executor would open pdb
    real = execute_mod.execute_job
    started: list[str] = []

    def teacher_fails(job, results):
        started.append(job.method)
        if job.method == "smoothmix":
            raise CrtBenchError("the teacher broke on purpose")
        return real(job, results)

    monkeypatch.setattr(execute_mod, "execute_job", teacher_fails)
    results, plots = tmp_path / "results", tmp_path / "plots"
    code, out, err = cli("reproduce", "--profile", "smoke", "--executor", "debug", "--results", results, "--out", plots)
    assert code == 1
    assert "crt" not in started  # the student of the failed teacher was never started
    message = " ".join(err.split())
    assert "2 of 3 jobs did not finish" in message and "the teacher broke on purpose" in message
    report = (plots / "REPORT.md").read_text()
    assert "## Missing cells" in report and "the teacher broke on purpose" in report
    assert "blocked (teacher failed)" in report


@pytest.mark.parametrize("command", [["sweep", "--method", "gaussian", "--arch", "tiny_cnn"],
                                     ["reproduce", "--profile", "smoke", "--device", "cpu"]])
@pytest.mark.parametrize("executor", ["local", "inline", "debug"])
def test_detach_without_slurm_is_one_line_and_runs_nothing(tmp_path, command, executor):
    code, out, err = cli(*command, "--executor", executor, "--detach", "--results", tmp_path / "r")
    assert_user_error(code, err, "--detach needs --executor slurm", f"the {executor} executor")
    assert out == "" and not (tmp_path / "r").exists()


def test_status_of_a_folder_that_is_not_a_results_store_is_one_line(tmp_path):
    code, _, err = cli("status", tmp_path)
    assert_user_error(code, err, str(tmp_path), "not a crt-bench results folder")
    (tmp_path / "tables").mkdir()  # a store where no grid ran
    code, _, err = cli("status", tmp_path)
    assert_user_error(code, err, "no grid has run", "grid_status.json")
    code, _, err = cli("status", tmp_path / "missing")
    assert_user_error(code, err, "does not exist")


def test_status_of_a_grid_run_here_needs_no_scheduler(tmp_path, monkeypatch):
    from crt_bench.store.grid_status import save_grid_status

    save_grid_status(tmp_path, [  # as run_grid records a grid that ran on this machine: no SLURM job ids
        {"key": "a", "state": "finished", "run_id": "r1", "error": "", "log": ""},
        {"key": "b", "state": "blocked (teacher failed)", "run_id": "", "error": "not started: its teacher a", "log": ""}])
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # no squeue to ask
    code, out, err = cli("status", tmp_path)
    assert code == 0, err
    assert out.splitlines() == [f"grid in {tmp_path}: 2 job(s): 1 finished, 1 blocked", "a: finished (run r1)",
                                "b: blocked: not started: its teacher a"]

"""summary.md and measurements.csv of the prepared GPU check, from what its steps left behind.

Reads ``WORK/steps.tsv`` (one line per step, written by ``benchmarks/gpu_check.sh``: name, exit code,
seconds, time limit, log file), the rows of ``WORK/certify.csv`` and ``WORK/train.csv``, and the logs
in OUT; writes ``OUT/summary.md`` and ``OUT/measurements.csv``.
"""
from __future__ import annotations

import math
import platform
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from gpu_check import N0_PAPER, N_PAPER, SIZES, TEST_IMAGES, tf32_now

TIMED_OUT = (124, 137)  # timeout's exit status, and KILL after its grace period
TAIL_LINES = 25


def nvidia_smi() -> str:
    """Driver version and GPU name(s) as nvidia-smi reports them, or why not."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as err:
        return f"nvidia-smi not available ({type(err).__name__})"
    return done.stdout.strip().replace("\n", "; ") or f"nvidia-smi failed: {done.stderr.strip()[:200]}"


def safely(read: Callable[[], str]) -> str:
    """``read()``, or why it could not be read: the summary is written whatever the machine lacks."""
    try:
        return read()
    except Exception as err:
        return f"unavailable ({type(err).__name__}: {err})"


def tf32_default() -> str:
    state = tf32_now()
    return (f"cuDNN convolutions {state['tf32_conv']}, CUDA matmuls {state['tf32_matmul']}, "
            f"float32 matmul precision {torch.get_float32_matmul_precision()}")


def device_info(mode: str) -> tuple[str, str]:
    """The measured device's name (crt_bench's wording) and its CUDA compute capability."""
    from crt_bench.core.provenance import device_name

    device = torch.device("cuda" if mode == "gpu" and torch.cuda.is_available() else "cpu")
    capability = ".".join(map(str, torch.cuda.get_device_capability(device))) if device.type == "cuda" else "n/a"
    return device_name(device), capability


def environment(mode: str) -> dict[str, str]:
    """The machine and library versions; TF32 is read first, before anything in this process sets it."""
    default = safely(tf32_default)
    from crt_bench.core.provenance import git_commit

    try:
        device, capability = device_info(mode)
    except Exception as err:  # a driver that torch cannot talk to: said in the table, not a crash
        device = capability = f"unavailable ({type(err).__name__}: {err})"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": mode,
        "device": device,
        "compute capability": capability,
        "nvidia-smi (name, driver)": nvidia_smi(),
        "CUDA (torch build)": torch.version.cuda or "none",
        "cuDNN": safely(lambda: str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "crt-bench commit": safely(git_commit),
        "TF32 default (torch, fresh process)": default,
    }


def read_steps(work: Path) -> list[dict]:
    path = work / "steps.tsv"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        name, rc, seconds, limit, log = (line.split("\t") + [""] * 5)[:5]
        steps.append({"name": name, "rc": int(rc), "seconds": float(seconds), "limit": limit, "log": log})
    return steps


def status(step: dict) -> str:
    rc = step["rc"]
    if rc == 0:
        return "ok"
    if rc < 0:
        return "skipped: no time left in the check's budget"
    if rc in TIMED_OUT:
        return f"timed out after {step['limit']} s (exit {rc})"
    return f"failed (exit {rc})"


def step_note(step: dict, mode: str, out: Path) -> str:
    """What the step ran, and its own last word where it has one (pytest's count of tests)."""
    if step["name"] == "pytest_gpu":
        last = [line for line in tail(out / step["log"], 5).splitlines() if line.strip()]
        what = "gpu-marked tests" if mode == "gpu" else "gpu-marked tests collected only (they need CUDA)"
        return f"{what}: {last[-1].strip().replace('|', '/')}" if last else what
    if step["name"] == "reproduce":
        what = ("crt_bench.cli reproduce --profile gpu-smoke --device cuda" if mode == "gpu" else
                "crt_bench.cli reproduce --profile gpu-smoke --device cpu --executor inline, the plan "
                "shrunk to tiny_cnn")
        return what + ("; REPORT.md copied beside this file" if (out / "REPORT.md").is_file() else "; no REPORT.md")
    return {"certify": "benchmarks/gpu_check.py certify", "train": "benchmarks/gpu_check.py train",
            "paper": "benchmarks/gpu_check.py paper (benchmarks/gpu_check_paper.py)"}.get(step["name"], "")


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    if not path.is_file():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(line[-300:] for line in text[-lines:])


def read_rows(work: Path, name: str) -> pd.DataFrame:
    path = work / f"{name}.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_csv(path)


def num(value: object, fmt: str = "{:.3g}") -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(x) else fmt.format(x)


def memory(value: object) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return ""
    return "n/a (cpu)" if x < 0 else ("" if math.isnan(x) else f"{x / 2**30:.2f} GiB")


def ratio(r: pd.Series, name: str) -> str:
    value, low, high = r.get(name), r.get(f"{name}_low"), r.get(f"{name}_high")
    text = num(value, "{:.2f}x")
    return f"{text} [{num(low, '{:.2f}')}, {num(high, '{:.2f}')}]" if text and num(low) and num(high) else text


def text(value: object) -> str:
    """A cell's text; empty for a missing value (NaN in a CSV column)."""
    return value if isinstance(value, str) else ""


def one_line(value: object, limit: int = 240) -> str:
    """A table cell on one line: a failure's multi-line message would break the Markdown table."""
    words = " ".join(text(value).split()).replace("|", "/")
    return words if len(words) <= limit else words[: limit - 3] + "..."


def tf32_used(r: pd.Series) -> str:
    conv, matmul = r.get("tf32_conv_used"), r.get("tf32_matmul_used")
    if not isinstance(conv, str):
        return ""
    return conv if not isinstance(matmul, str) else f"{conv} / {matmul}"


def md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *["| " + " | ".join(row) + " |" for row in rows]]


def certify_section(df: pd.DataFrame, mode: str) -> list[str]:
    sizes, unit = SIZES[mode], mode.upper()
    if df.empty:
        return ["No certification rows (the step wrote none: see its status and log above).", ""]
    how = (f"measured at N0 = {sizes.cert_n0}, N = {sizes.cert_n:,} on {sizes.cert_images} image(s) and scaled "
           f"linearly to N = {N_PAPER:,} (the same forward batches, N / batch times)" if sizes.cert_n != N_PAPER
           else f"measured at N0 = {N0_PAPER}, N = {N_PAPER:,} on {sizes.cert_images} image(s), not scaled")
    lines = [f"## Certification: {df['arch'].iloc[0]}, 32x32x3, 10 classes, untrained weights", "",
             "Smooth.certify_many, sigma 0.25; batch: the engine's own choice (from free memory on CUDA) evened "
             f"out to a divisor of the samples, so that every forward batch has one shape; {how}. {unit}-hours: "
             f"seconds per image x {TEST_IMAGES:,} (the CIFAR-10 test set) / 3600. Each variant was warmed up "
             "first on the batch shapes of the timed call; the warm-up (BatchNorm folding, cuDNN autotuning, "
             "and for +compile the compilation) is its own column, never in the timed figure.", ""]
    headers = ["variant", "status", "batch", "noisy forwards/s", "s/image at N=100,000", f"{unit}-h, 10,000 images",
               "peak memory", "warm-up s (+compile: the compilation)", "TF32 conv / matmul as used"]
    rows = [[r["variant"], one_line(r["status"]), num(r.get("batch_size"), "{:.0f}"), num(r.get("noisy_forwards_per_s"), "{:,.0f}"),
             num(r.get("seconds_per_image_n100k")), num(r.get("device_hours_test_set")),
             memory(r.get("peak_memory_bytes")), num(r.get("warmup_seconds"), "{:.1f}"), tf32_used(r)]
            for _, r in df.iterrows()]
    return lines + md_table(headers, rows) + [""]


def train_section(df: pd.DataFrame, mode: str) -> list[str]:
    sizes = SIZES[mode]
    if df.empty:
        return ["No training rows (the step wrote none: see its status and log above).", ""]
    batch = "each method's recipe batch size" if sizes.batch_size is None else \
        f"batch {sizes.batch_size} for every method ({mode} mode: not the recipes' sizes)"
    lines = ["## One training step of every method", "",
             f"crt_bench.timing.rounds.interleaved_rows: {batch}, {sizes.warmup} warm-up batches, then "
             f"{sizes.rounds} interleaved rounds of {sizes.batches} timed loader batches; CRT's teacher "
             f"{sizes.teacher} (folded, frozen). Ratios are the median over rounds of the same-round ratio to "
             "Gaussian [distribution-free interval]: per loader batch, and projected over the whole recipe "
             "(per-epoch ratio x recipe epochs / Gaussian's 150; MACER's recipe has 440). The paper's "
             "figures are whole-run ratios for ResNet-110 on one V100 (CRT paper, Table 1).", ""]
    headers = ["method", "status", "batch", "optimizer steps / batch", "fwd+bwd passes", "s per loader batch",
               "peak memory", "x Gaussian per batch", "recipe epochs", "x Gaussian, recipe", "paper (whole run)",
               "precision", "TF32 conv / matmul as used"]
    for arch, part in df.groupby("arch", sort=False):
        rows = [[text(r.get("variant")), one_line(r["status"]), num(r.get("batch_size"), "{:.0f}"),
                 num(r.get("optimizer_steps_per_batch"), "{:.0f}"), num(r.get("fwd_bwd_passes"), "{:.2f}"),
                 num(r.get("seconds_per_batch"), "{:.4g}"), memory(r.get("peak_memory_bytes")),
                 ratio(r, "batch_ratio"), num(r.get("recipe_epochs"), "{:.0f}"), ratio(r, "recipe_ratio"),
                 num(r.get("paper_ratio_resnet110"), "{:.2f}x"), text(r.get("precision")), tf32_used(r)]
                for _, r in part.iterrows()]
        lines += [f"### {arch}", "", *md_table(headers, rows), ""]
    return lines


def paper_section(df: pd.DataFrame) -> list[str]:
    """The paper-protocol step: each probe's measure, seconds and kernel-busy share, and its recipe ratios
    beside the paper's (benchmarks/gpu_check_paper.py)."""
    if df.empty:
        return ["No paper-protocol rows (the step wrote none: see its status and log above).", ""]
    headers = ["probe", "status", "configuration", "batch", "measured", "s per loader batch", "kernel busy",
               "x Gaussian", "x standard 150x256", "x standard 200x128", "paper x (vs standard)", "x SmoothMix",
               "paper x SmoothMix"]
    rows = [[text(r.get("variant")), one_line(r["status"]), text(r.get("config")), num(r.get("batch_size"), "{:.0f}"),
             text(r.get("measure")), num(r.get("seconds_per_batch"), "{:.4g}"),
             num(r.get("kernel_busy_fraction"), "{:.0%}"), num(r.get("x_gaussian"), "{:.2f}"),
             num(r.get("x_standard_150x256"), "{:.2f}"), num(r.get("x_standard_200x128"), "{:.2f}"),
             num(r.get("paper_x_standard"), "{:.2f}"), num(r.get("x_smoothmix"), "{:.2f}"),
             num(r.get("paper_x_smoothmix"), "{:.2f}")] for _, r in df.iterrows()]
    return ["## The slowdown table's methods in the paper protocol", "",
            "crt_bench.timing.paper, fp32 (TF32 off): the official scripts' loop (DataLoader with RandomCrop and "
            "flip, .item() per step, each script's per-epoch test pass); one measurement each, recipe ratios as "
            "quotients (no interval). Kernel busy: GPU kernel time over wall time (torch.profiler; below 50%: "
            "launch-bound).", "", *md_table(headers, rows), ""]


def write_summary(mode: str, work: Path, out: Path) -> None:
    env = environment(mode)
    steps = read_steps(work)
    certify, train, paper = read_rows(work, "certify"), read_rows(work, "train"), read_rows(work, "paper")
    lines = [f"# crt-bench GPU check ({mode} mode), {env['date']}", "",
             "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in env.items()], "",
             "TF32 as used: crt-bench runs fp32 training and certification with TF32 off (IEEE float32); the "
             "check measures TF32 as its own certification precision. The last column of each table is what "
             "torch's switches said at the measurement's first forward pass.", "",
             "## Steps", "", "| step | status | seconds | log | what |", "|---|---|---|---|---|"]
    lines += [f"| {s['name']} | {status(s)} | {s['seconds']:.0f} | {s['log']} | {step_note(s, mode, out)} |"
              for s in steps]
    lines.append("")
    for s in steps:
        if s["rc"] != 0 and s["rc"] >= 0:
            lines += [f"### {s['name']}: {status(s)}; the end of {s['log']}", "", "```",
                      tail(out / s["log"]), "```", ""]
    lines += certify_section(certify, mode) + train_section(train, mode) + paper_section(paper)
    rows = pd.concat([certify, train, paper], ignore_index=True)
    if not rows.empty:
        rows = rows.assign(check_mode=mode, check_date=env["date"], check_device=env["device"],
                           check_torch=env["torch"], check_cuda=env["CUDA (torch build)"],
                           check_driver=env["nvidia-smi (name, driver)"])
        rows.to_csv(out / "measurements.csv", index=False)
        lines.append("All figures, with every column of the probes: measurements.csv.")
    (out / "summary.md").write_text("\n".join(lines) + "\n")

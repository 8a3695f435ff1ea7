"""The ``list`` command: methods, architectures, profiles (torch-free unless ``--sizes``)."""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer
from rich.table import Table

from crt_bench.cli.options import JsonOpt
from crt_bench.cli.output import out, print_json
from crt_bench.config.choices import Registry
from crt_bench.config.profiles import PROFILES
from crt_bench.methods.registry import get_method, list_methods
from crt_bench.models.registry import list_archs


def list_cmd(
    what: Annotated[Registry, typer.Argument(help="what to list")] = "archs",
    sizes: Annotated[bool, typer.Option(help="archs: build each and measure params and FLOPs (slower)")] = False,
    json: JsonOpt = False,
) -> None:
    """Print a registry."""
    rows = {"archs": _arch_rows, "methods": _method_rows, "profiles": _profile_rows}[what](sizes)
    if json:
        print_json(rows)
        return
    title = {"archs": "architectures" + (" (sizes for CIFAR-10: 10 classes, 3x32x32)" if sizes else ""),
             "methods": "methods", "profiles": "profiles"}[what]
    table = Table(title=title)
    shown = {"archs": ["name", "family", "year", "source", *(("params", "GFLOPs/image") if sizes else ()),
                       "description"],
             "methods": ["name", "teacher", "recipe (epochs / batch / lr / milestones)", "reference"],
             "profiles": ["name", "dataset", "epoch scale", "certify", "description"]}[what]
    for col in shown:
        table.add_column(col)
    for row in rows:
        table.add_row(*_cells(what, row))
    out.print(table)


def _arch_rows(sizes: bool) -> list[dict[str, Any]]:
    rows = []
    for s in list_archs():
        row: dict[str, Any] = dict(name=s.name, aliases=list(s.aliases), family=s.family, generation=s.generation,
                                   source=s.source, input_size=s.input_size, description=s.description)
        if sizes:
            from crt_bench.models.stats import arch_stats  # builds the model: torch

            row.update(arch_stats(s.name))
        rows.append(row)
    return rows


def _method_rows(_: bool) -> list[dict[str, Any]]:
    return [dict(name=m.name, needs_teacher=m.needs_teacher, recipe=dataclasses.asdict(m.recipe), reference=m.reference)
            for m in list_methods()]


def _profile_rows(_: bool) -> list[dict[str, Any]]:
    return [dict(name=p.name, dataset=p.dataset, epoch_scale=p.epoch_scale, batch_size=p.batch_size,
                 train_limit=p.train_limit, test_limit=p.test_limit, certify=dataclasses.asdict(p.certify),
                 description=p.description) for p in PROFILES.values()]


def _cells(what: str, row: dict[str, Any]) -> list[str]:
    if what == "archs":
        name = row["name"] + (f" ({', '.join(row['aliases'])})" if row["aliases"] else "")
        sizes = [f"{row['params'] / 1e6:.2f}M", f"{row['flops_per_image'] / 1e9:.3f}"] if "params" in row else []
        return [name, row["family"], str(row["generation"]), row["source"], *sizes, row["description"]]
    if what == "methods":
        r = row["recipe"]
        return [row["name"], "yes" if row["needs_teacher"] else "",
                f"{r['epochs']} / {r['batch_size']} / {r['lr']} / {list(r['milestones'])}", row["reference"]]
    c = row["certify"]
    return [row["name"], row["dataset"], f"{row['epoch_scale']:g} x recipe", f"N0={c['n0']} N={c['n']} {c['subset']}",
            row["description"]]


def method_defaults_table(name: str) -> Table:
    """A method's paper defaults (per sigma where the paper varies them) and its recipe."""
    spec = get_method(name)
    r = spec.recipe
    per_sigma = hasattr(spec.hparams, "for_sigma")
    sigmas = (0.25, 0.5, 1.0) if per_sigma else (None,)
    table = Table(title=f"{name}: hyper-parameters (override with --set KEY=VALUE)",
                  caption=f"recipe: {r.epochs} epochs, batch {r.batch_size}, lr {r.lr} x{r.gamma} at epochs "
                          f"{list(r.milestones)} (0-based), momentum {r.momentum}, weight decay {r.weight_decay}; "
                          f"{r.source}\n{spec.reference}")
    table.add_column("hyper-parameter")
    for sigma in sigmas:
        table.add_column("default" if sigma is None else f"sigma={sigma}")
    hps = [dataclasses.asdict(spec.make_hparams(sigma=sigma)) for sigma in sigmas]
    for key in hps[0]:
        table.add_row(key, *[str(hp[key]) for hp in hps])
    return table

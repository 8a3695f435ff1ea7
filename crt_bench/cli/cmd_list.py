"""The ``list`` command: methods, architectures, profiles."""
from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from crt_bench.cli.output import out
from crt_bench.core.errors import CrtBenchError


def list_cmd(
    what: Annotated[str, typer.Argument(help="archs | methods | profiles")] = "archs",
    sizes: Annotated[bool, typer.Option(help="archs: build each and measure params and FLOPs (slower)")] = False,
) -> None:
    """Print a registry."""
    from crt_bench.config.profiles import PROFILES
    from crt_bench.methods.registry import list_methods
    from crt_bench.models.registry import list_archs

    if what == "archs":
        from crt_bench.models.stats import arch_stats

        table = Table(title="architectures" + (" (sizes for CIFAR-10: 10 classes, 3x32x32)" if sizes else ""))
        for col in ("name", "family", "year", "source", *(("params", "GFLOPs/image") if sizes else ()),
                    "description"):
            table.add_column(col)
        for s in list_archs():
            name = s.name + (f" ({', '.join(s.aliases)})" if s.aliases else "")
            cells = []
            if sizes:
                stats = arch_stats(s.name)
                cells = [f"{stats['params'] / 1e6:.2f}M", f"{stats['flops_per_image'] / 1e9:.3f}"]
            table.add_row(name, s.family, str(s.generation), s.source, *cells, s.description)
    elif what == "methods":
        table = Table(title="methods")
        for col in ("name", "teacher", "recipe (epochs / batch / lr / milestones)", "reference"):
            table.add_column(col)
        for m in list_methods():
            r = m.recipe
            table.add_row(m.name, "yes" if m.needs_teacher else "", f"{r.epochs} / {r.batch_size} / {r.lr} / "
                          f"{list(r.milestones)}", m.reference)
    elif what == "profiles":
        table = Table(title="profiles")
        for col in ("name", "dataset", "epoch scale", "certify", "description"):
            table.add_column(col)
        for p in PROFILES.values():
            c = p.certify
            table.add_row(p.name, p.dataset, f"{p.epoch_scale:g} x recipe", f"N0={c.n0} N={c.n} {c.subset}", p.description)
    else:
        raise CrtBenchError(f"unknown registry {what!r}; choose archs, methods or profiles")
    out.print(table)

"""The frozen teacher of knowledge transfer (CRT): loading it and its forward pass."""
from __future__ import annotations

import logging
import torch
from torch import Tensor, nn
from torch.profiler import record_function

from crt_bench.core.errors import CrtBenchError
from crt_bench.data.catalog import DatasetInfo
from crt_bench.models.bn_fold import fold_batchnorm
from crt_bench.models.files import LoadedModel, load_model
from crt_bench.train.step import resolve_channels_last, resolve_teacher_precision

log = logging.getLogger(__name__)



def load_teacher(source: str, results_root: str, info: DatasetInfo, device: torch.device, sigma: float,
                 input_layer: str = "normalize", same_sigma: bool = True) -> LoadedModel:
    """Load a frozen teacher and check it fits the student's data (classes, channels, image size).

    ``same_sigma``: warn when it was trained at another sigma (CRT's teacher; not an off-the-shelf
    classifier that a method composes its model around, whose training noise is its own affair).
    """
    teacher = load_model(source, results_root, input_layer)
    meta = teacher.meta
    if meta["num_classes"] != info.num_classes:
        raise CrtBenchError(f"teacher {source!r} predicts {meta['num_classes']} classes ({meta.get('dataset')}) but "
                            f"the student's data, {info.name}, has {info.num_classes}: train the student on the "
                            f"teacher's data (--dataset {meta.get('dataset')}, or the --profile the teacher used)")
    if meta["in_chans"] != info.in_chans or meta.get("image_size", info.image_size) != info.image_size:
        raise CrtBenchError(
            f"teacher {source!r} was built for {meta['in_chans']}x{meta.get('image_size')}x{meta.get('image_size')} "
            f"inputs ({meta.get('dataset')}) but the student's data ({info.name}) is "
            f"{info.in_chans}x{info.image_size}x{info.image_size}: train the student on the teacher's data "
            f"(--dataset {meta.get('dataset')}, or the --profile the teacher used)")
    if same_sigma and meta.get("sigma") is not None and abs(float(meta["sigma"]) - sigma) > 1e-9:
        log.warning(f"teacher {source!r} was trained at sigma {meta['sigma']}, the student "
                    f"trains at sigma {sigma}; CRT uses the same sigma for both")
    model = teacher.model.to(device).eval().requires_grad_(False)
    return LoadedModel(model, meta, teacher.path)


class FrozenTeacher(nn.Module):
    """A teacher as CRT queries it: frozen, batch norm folded, NHWC, inference mode, maybe bf16.

    ``teacher(x)`` returns float32 logits that are ordinary tensors (not inference tensors), so a loss
    may use them freely. ``folded`` counts the batch norms folded away (0: the model is used as given).
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], device: torch.device,
                 precision: str = "auto", channels_last: bool | None = None, fold: bool = True,
                 compile: bool = False) -> None:
        super().__init__()
        model = model.to(device).eval().requires_grad_(False)
        folded, self.folded = fold_batchnorm(model, tuple(input_shape)) if fold else (None, 0)
        net = folded if folded is not None else model
        self.channels_last = resolve_channels_last(channels_last, net)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.precision = resolve_teacher_precision(precision, device)
        self.device_type = device.type
        self.net = net
        self._call = torch.compile(net) if compile else net

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        cast = (torch.autocast(self.device_type, dtype=torch.bfloat16) if self.precision == "bf16"
                else torch.autocast(self.device_type, enabled=False))
        with record_function("crt_bench.teacher"), torch.inference_mode(), cast:
            out = self._call(x)
        return out.to(torch.float32, copy=True)  # a copy made outside inference mode: an ordinary tensor

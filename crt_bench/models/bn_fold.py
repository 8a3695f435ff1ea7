"""Folding eval-mode batch norm into the preceding convolution, on a copy of a model.

In eval mode ``BN(conv(x)) = conv'(x)`` with ``W' = W * gamma / sqrt(var + eps)`` and a matching bias, so a
frozen network (the certified model, CRT's teacher) can drop every batch-norm layer: one kernel less
per block and the same logits up to float rounding. The copy is made with ``torch.fx`` and checked
against the model on a probe batch before it is used; the check always runs in IEEE float32 (TF32 off,
:mod:`crt_bench.core.tf32`), whatever the caller's setting: TF32's 10-bit rounding of the convolution inputs
alone exceeds its tolerance for ResNet-20/110 and would silently drop the folded copy.
"""
from __future__ import annotations

import copy

import torch

from crt_bench.core.tf32 import tf32_mode


class _BatchNormLeafTracer(torch.fx.Tracer):
    """Keeps every BatchNorm2d (also subclasses such as timm's ``BatchNormAct2d``) as one graph node."""

    def is_leaf_module(self, module: torch.nn.Module, qualified_name: str) -> bool:
        return isinstance(module, torch.nn.BatchNorm2d) or super().is_leaf_module(module, qualified_name)


def _is_batchnorm_act(module: torch.nn.Module) -> bool:
    """timm's ``BatchNormAct2d``: ``act(drop(batch_norm(x)))``."""
    return type(module).__name__ == "BatchNormAct2d" and hasattr(module, "drop") and hasattr(module, "act")


def fold_batchnorm(model: torch.nn.Module, shape: tuple[int, ...]) -> tuple[torch.nn.Module | None, int]:
    """A ``torch.fx`` copy of ``model`` (in eval mode) with each ``Conv2d -> BatchNorm2d`` pair folded.

    Also folds timm's ``BatchNormAct2d`` (the batch norm goes into the convolution, the activation
    stays).  Returns ``(copy, number folded)``, or ``(None, 0)`` when the model has no batch norm,
    cannot be traced symbolically, nothing can be folded, or the copy's logits differ from the
    model's on a probe batch of four uniform images of ``shape`` ``[C, H, W]`` (relative tolerance
    1e-3).  The model itself is never changed.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def foldable(module: torch.nn.Module | None) -> bool:
        return module is not None and (type(module) is torch.nn.BatchNorm2d or _is_batchnorm_act(module))

    if model.training or not any(foldable(m) for m in model.modules()):
        return None, 0
    try:
        root = copy.deepcopy(model)
        graph_module = torch.fx.GraphModule(root, _BatchNormLeafTracer().trace(root))
    except Exception:  # noqa: BLE001 - any tracing failure means "use the model as given"
        return None, 0
    modules = dict(graph_module.named_modules())
    calls: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def replace(target: str, module: torch.nn.Module) -> None:
        parent, _, name = target.rpartition(".")
        setattr(graph_module.get_submodule(parent) if parent else graph_module, name, module)
        modules[target] = module

    folded = 0
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not foldable(modules.get(node.target)):
            continue
        conv_node = node.args[0] if node.args else None
        if not (isinstance(conv_node, torch.fx.Node) and conv_node.op == "call_module"
                and type(modules.get(conv_node.target)) is torch.nn.Conv2d):
            continue
        bn, conv = modules[node.target], modules[conv_node.target]
        if (len(conv_node.users) != 1 or calls[conv_node.target] != 1 or calls[node.target] != 1
                or bn.running_mean is None or bn.running_var is None or len(node.args) != 1 or node.kwargs):
            continue
        replace(conv_node.target, fuse_conv_bn_eval(conv, bn))
        if type(bn) is torch.nn.BatchNorm2d:
            node.replace_all_uses_with(conv_node)
            graph_module.graph.erase_node(node)
        else:  # BatchNormAct2d: keep drop + act (both act on the folded convolution's output)
            replace(node.target, torch.nn.Sequential(bn.drop, bn.act))
        folded += 1
    if not folded:
        return None, 0
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    graph_module.eval()
    if not _same_logits(model, graph_module, shape):
        return None, 0
    return graph_module, folded


def _same_logits(model: torch.nn.Module, candidate: torch.nn.Module, shape: tuple[int, ...]) -> bool:
    """Both give the same logits (up to float rounding) on a fixed probe batch of uniform [0, 1] images.

    Compared with TF32 off: the tolerance is float32's, not TF32's.
    """
    tensor = next(iter((*model.parameters(), *model.buffers())), None)
    if tensor is None:
        return False
    generator = torch.Generator().manual_seed(0)  # a private generator: the user's noise stream is untouched
    probe = torch.rand((4, *shape), generator=generator).to(tensor.device)
    try:
        with torch.inference_mode(), tf32_mode(False):
            expected, got = model(probe).float(), candidate(probe).float()
    except Exception:  # noqa: BLE001 - e.g. the model wants another input size: don't fold
        return False
    if expected.shape != got.shape or not torch.isfinite(expected).all():
        return False
    scale = float(expected.abs().max()) + 1e-6
    return bool(torch.allclose(got, expected, rtol=1e-3, atol=1e-4 * scale))

"""From command-line choices to a :class:`~crt_bench.config.run.RunConfig`: the method's recipe, scaled to the profile."""
from __future__ import annotations

import dataclasses

from crt_bench.config.choices import INPUT_LAYERS, check_teacher_precision
from crt_bench.config.profiles import get_profile
from crt_bench.config.run import RunConfig
from crt_bench.config.schedule import ScaledRecipe, scaled_epochs, scaled_milestones
from crt_bench.core.checks import check_choice, check_count, check_positive, check_sigma
from crt_bench.core.errors import CrtBenchError
from crt_bench.data.catalog import dataset_info
from crt_bench.methods.registry import get_method
from crt_bench.models.registry import get_arch


def scaled_recipe(method: str, scale: float) -> ScaledRecipe:
    """``method``'s recipe epochs and milestones times ``scale`` (see :func:`scaled_milestones`)."""

    recipe = get_method(method).recipe
    epochs = scaled_epochs(recipe.epochs, scale)
    return ScaledRecipe(method, scale, recipe.epochs, tuple(recipe.milestones), epochs,
                        scaled_milestones(recipe.milestones, recipe.epochs, epochs))


def describe_scale(scale: float, methods: list[str]) -> str:
    """``epochs = 0.1 x each recipe: gaussian 15 (lr decays at 5, 10), crt 20 (...)`` for a banner."""
    parts = "; ".join(scaled_recipe(m, scale).describe() for m in methods)
    return f"epochs = {scale:g} x each method's recipe: {parts}"


def _first_given(*values: int | None) -> int:
    return next(v for v in values if v is not None)


def resolve_run_config(
    method: str,
    arch: str,
    *,
    profile: str = "smoke",
    dataset: str | None = None,
    sigma: float = 0.25,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    teacher: str | None = None,
    teacher_input_layer: str = "normalize",
    teacher_dedicated: bool = False,
    job_key: str = "",
    hparams: dict[str, str] | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    amp: bool = True,
    channels_last: bool | None = None,
    compile: bool = False,
    teacher_precision: str = "auto",
    trace_steps: int = 0,
    epoch_scale: float | None = None,
    tf32: bool = False,
) -> RunConfig:
    """Recipe, then profile, then explicit arguments. Validates every name and number.

    Epochs: explicit ``epochs`` win; else ``epoch_scale`` (or the profile's) times the method's recipe
    epochs (:func:`scaled_epochs`). Milestones keep the recipe's proportions either way.
    """

    spec = get_method(method)
    arch = get_arch(arch).name  # an alias (convnext) is stored under its canonical name (convnext_atto)
    prof = get_profile(profile)
    dataset = dataset or prof.dataset
    dataset_info(dataset)
    check_sigma(sigma)
    if spec.needs_teacher and not teacher:
        raise CrtBenchError(
            f"method {method!r} needs a certifiably robust teacher: pass --teacher RUN_ID (a finished run, e.g. the "
            f"id printed last by `crt-bench run --method smoothmix --arch resnet20 --profile {profile}`), a "
            "checkpoint released with the smoothing papers, or let `crt-bench proxy --student-arch "
            f"{arch}` train a proxy teacher and then this student")

    check_choice("--teacher-input-layer", teacher_input_layer, INPUT_LAYERS)
    if teacher and not spec.needs_teacher:
        raise CrtBenchError(f"method {method!r} takes no teacher (got --teacher {teacher})")
    recipe = spec.recipe
    hp = spec.make_hparams(hparams, sigma=float(sigma))
    scale = None
    if not spec.trains(hp):  # the hyper-parameters leave nothing to train: the run only assembles its model
        epochs = 0
    elif epochs is None:
        scale = float(epoch_scale if epoch_scale is not None else prof.epoch_scale)
        epochs = scaled_epochs(recipe.epochs, scale)
    else:
        check_count("epochs", epochs)
    batch_size = _first_given(batch_size, prof.batch_size, recipe.batch_size)
    check_count("batch size", batch_size)
    if lr is not None:
        check_positive("learning rate", lr)
    check_count("--trace-steps", trace_steps, minimum=0)

    check_teacher_precision(teacher_precision)
    return RunConfig(
        method=method,
        arch=arch,
        dataset=dataset,
        profile=profile,
        sigma=float(sigma),
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr if lr is not None else recipe.lr),
        milestones=scaled_milestones(recipe.milestones, recipe.epochs, int(epochs)),
        gamma=recipe.gamma,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        seed=seed,
        teacher=teacher,
        teacher_input_layer=teacher_input_layer,
        teacher_dedicated=teacher_dedicated,
        job_key=job_key,
        hparams=dataclasses.asdict(hp),
        train_limit=train_limit if train_limit is not None else prof.train_limit,
        test_limit=test_limit if test_limit is not None else prof.test_limit,
        data_dir=data_dir,
        device=device,
        amp=amp,
        channels_last=channels_last,
        compile=bool(compile),
        teacher_precision=teacher_precision,
        trace_steps=int(trace_steps),
        epoch_scale=scale,
        recipe_epochs=int(recipe.epochs),
        tf32=bool(tf32),
        optimizer=recipe.optimizer,
    )

"""Randomized-smoothing certification: CERTIFY and PREDICT of Cohen et al. (2019).

The smoothed classifier is ``g(x) = argmax_c P(f(x + eps) = c)`` with ``eps ~ N(0, sigma^2 I)`` added in
[0, 1] pixel space (before any normalization layer, which belongs to the base classifier ``f``).
If the top class has probability ``pA > 1/2`` then ``g`` is constant on the L2 ball of radius
``sigma * Phi^-1(pA)`` around ``x`` (Cohen et al., Theorem 1 with the bound pB <= 1 - pA).

``pA`` is unknown; CERTIFY estimates it by Monte Carlo:

1. *Selection*: draw ``n0`` noisy copies, guess the top class ``cA`` = most frequent prediction.
2. *Estimation*: draw ``n`` **fresh** noisy copies and count ``nA`` = how often ``f`` says ``cA``.
   Reusing the selection samples would bias ``nA`` upwards (the class was picked because it was
   frequent in those samples), so the two samples are independent.
3. ``pA_lower`` = one-sided ``(1 - alpha)`` Clopper-Pearson lower bound on ``pA`` from ``nA`` of ``n``.
4. If ``pA_lower < 1/2`` abstain, else return ``cA`` with radius ``sigma * Phi^-1(pA_lower)``.

Guarantee: with probability at least ``1 - alpha`` (over the Monte Carlo noise) CERTIFY either
abstains or returns ``g(x)``, and then ``g`` is robust within the returned radius.

PREDICT draws ``n`` noisy copies, takes the two most frequent classes and abstains unless a two-sided
binomial test rejects "both are equally likely" at level ``alpha``; then with probability at least
``1 - alpha`` a non-abstaining answer equals ``g(x)``.

The statistics are module-level pure functions (:func:`lower_confidence_bound`,
:func:`radius_from_counts`, :func:`predict_abstains`) so they can be checked without a model.

Sampling engine of :class:`~crt_bench.certify.smooth.Smooth` (statistics unchanged: every noisy copy has
its own fresh float32 Gaussian draw, independent of every other copy's; only how the copies are packed
and evaluated differs):

* the noise is drawn in place into a float32 buffer on the image's device (no ``repeat`` copies of the
  image) and the image is added by broadcasting;
* ``certify_many`` / ``sample_counts`` fill each forward batch with noisy copies of several images (and
  of an image's selection and estimation samples) and count per (image, class) with a scatter-add over
  ``segment * num_classes + class``; counts stay on the device until the end;
* ``torch.inference_mode``; ``precision`` ``bf16`` / ``fp16`` autocasts the base classifier's forward
  only (``NOISE_DTYPE``); a compiled bf16 forward instead runs the engine's private folded copy with
  bf16 weights, the float32 noisy batch cast at its input; ``tf32`` is the float32 forward with TF32 on
  (Ampere+ GPUs), every other precision runs with TF32 off, set only while the engine samples
  (:mod:`crt_bench.core.tf32`); ``fastest`` times one forward batch in fp32 and in bf16 (compiled
  when ``compile``) before the first sampling (in ``warm_up`` where called) and keeps bf16 only where
  it is faster; ``Smooth.precision`` is then the precision chosen, and the choice is logged;
* ``compile=True``: ``torch.compile(dynamic=False)`` with inductor freezing (weights become constants;
  a compile option, torch's global config is untouched): one static graph, at the full batch size
  (a shorter last batch is padded to it), which ``warm_up`` compiles before timed work;
* ``fold_batchnorm`` (default on): eval-mode batch norms (``BatchNorm2d``, timm's ``BatchNormAct2d``)
  that directly follow a ``Conv2d`` are folded into it in a private ``torch.fx`` copy of the model
  (checked against the model on a probe batch; the model as given is used when it cannot be traced or
  nothing can be folded; see :func:`crt_bench.models.bn_fold.fold_batchnorm`).  The copy is rebuilt
  when the model's parameters or buffers change in place;
* ``channels_last`` (``None`` = automatic: on CUDA for models with a ``Conv2d``, and whenever the engine
  has its own folded copy, which is then stored NHWC too) makes the noisy batches NHWC;
* ``cpu_workers`` (CPU only; ``None`` = automatic: ``torch.get_num_threads()`` workers for models with a
  ``Conv2d``, else 1): forward passes run in that many threads with one intra-op thread each
  (``torch.set_num_threads(1)`` for the duration of the call and of the warm-up, restored after; a
  compiled model's kernels are then generated single-threaded), so the base classifier must tolerate
  being called from several threads at once (any module in eval mode without Python-side state does);
  pass ``cpu_workers=1`` otherwise;
* ``early_stop`` (default on, with keyed noise): CERTIFY stops drawing an image's estimation samples
  once its row must be ABSTAIN whatever they show (:mod:`crt_bench.certify.early_stop`); the rows are
  those of a run without stopping (:meth:`~crt_bench.certify.smooth.Smooth.certify_counts` returns each
  row's counts too, stopped images' partial ones included: ``n_counted < n``);
* ``batch_size=None`` picks the batch size: from free memory on CUDA (probe forward pass of 64 zeros),
  else ``CPU_AUTO_BATCH``.  A given batch size is used as given.

Certify (layer 5), may import: core, config, parallel, store, data, methods, models.
Modules, one job each: :mod:`~crt_bench.certify.stats` (Clopper-Pearson, radius, PREDICT's test),
:mod:`~crt_bench.certify.precision` (forward precision; noise stays float32),
:mod:`~crt_bench.certify.smooth` (:class:`Smooth`, the batched sampling engine),
:mod:`~crt_bench.certify.prepare` (the model it calls: folded, cast, compiled; ``fastest``),
:mod:`~crt_bench.certify.early_stop` (exact early abstention),
:mod:`~crt_bench.certify.stream` (noisy samples, keyed per image), :mod:`~crt_bench.certify.driver`
(subsets and the driver over a test split).  Storing, resuming and locking a certification of a run
is :mod:`crt_bench.certify.resumable`'s job.
"""

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

Certify (layer 5), may import: core, config, parallel, store, data, methods, models.  Modules:

* :mod:`~crt_bench.certify.smooth`: :class:`Smooth`, CERTIFY and PREDICT as in Cohen et al.'s ``core.py``;
* :mod:`~crt_bench.certify.stats`: Clopper-Pearson bounds, radii, PREDICT's test;
* :mod:`~crt_bench.certify.engine`: the sampling engine and its speed options (none changes the statistics),
  with :mod:`~crt_bench.certify.stream` (noisy samples, keyed per image), :mod:`~crt_bench.certify.prepare`
  (the model it calls: folded, cast, compiled; ``fastest``), :mod:`~crt_bench.certify.precision`,
  :mod:`~crt_bench.certify.batching` and :mod:`~crt_bench.certify.early_stop` (exact early abstention);
* :mod:`~crt_bench.certify.driver`: subsets and CERTIFY over a test split; storing, resuming and locking a
  certification of a run: :mod:`~crt_bench.certify.resumable` (shards: :mod:`~crt_bench.certify.shards`);
* :mod:`~crt_bench.certify.transfer` / :mod:`~crt_bench.certify.transfer_run`: certificate transfer;
  :mod:`~crt_bench.certify.agreement`: a low-precision certification checked against fp32.
"""

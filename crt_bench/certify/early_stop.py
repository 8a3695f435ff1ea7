"""Exact early abstention in CERTIFY: stop an image's estimation once its outcome must be ABSTAIN.

CERTIFY certifies iff the estimation count ``nA`` of the selected class reaches
:func:`~crt_bench.certify.stats.min_certifying_count` (``m``).  Once the selection (``n0`` samples) of an
image is counted, its class ``cA`` is fixed; when ``nA so far + samples not yet counted < m`` no outcome
of the remaining samples can certify, so the row is ``(ABSTAIN, 0.0)`` whatever they show and they are
not drawn.  Votes of samples already in flight may still be counted: they cannot change that row either.

An image stopped so keeps partial counts (``n_counted < n`` in its row): they decide it at this alpha and at
every stricter one, not at a looser one (:mod:`crt_bench.analysis.recertify` names such images there).

The rows equal a run without stopping only when an image's noise does not depend on which samples were
drawn before it, i.e. with keyed noise (``Smooth(noise_seed=...)``), which is when the engine uses this.
"""
from __future__ import annotations

import numpy as np

from crt_bench.certify.stats import min_certifying_count
from crt_bench.certify.stream import SampleStream


CUDA_CHECK_EVERY = 8
"""On a GPU the check runs after every 8th batch (it copies the counts to the host)."""


class AbstainCheck:
    """After each counted batch, cut the estimation segments of images that can no longer certify.

    ``stream`` holds CERTIFY's segments: image ``i``'s selection is segment ``2i``, its estimation ``2i+1``.
    """

    def __init__(self, stream: SampleStream, n0: int, n: int, alpha: float) -> None:
        self.stream, self.n0, self.n = stream, int(n0), int(n)
        self.needed = min_certifying_count(self.n, alpha)
        self.open = list(range(len(stream.segments) // 2))  # images whose estimation may still be cut
        self.stopped = 0
        # reading the counts waits for the device: on a GPU only every few batches, so the queue stays full
        self.every, self.calls = (1 if stream.counts.device.type == "cpu" else CUDA_CHECK_EVERY), 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls % self.every:
            return
        stream = self.stream
        ready = [i for i in self.open if stream.counted[2 * i] >= self.n0]
        if not ready:
            return
        counts = stream.counts.view(len(stream.segments), stream.c).cpu().numpy()
        for i in ready:
            estimated = int(stream.counted[2 * i + 1])
            if estimated >= self.n:
                self.open.remove(i)
                continue
            c_a = int(np.argmax(counts[2 * i]))  # as certify_many: ties -> lowest class index
            if int(counts[2 * i + 1, c_a]) + self.n - estimated < self.needed:
                stream.truncate(2 * i + 1)
                self.open.remove(i)
                self.stopped += 1

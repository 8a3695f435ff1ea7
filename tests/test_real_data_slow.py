"""Real offline data end to end (Fashion-MNIST from Debian's dataset-fashion-mnist): `make test-all`."""
from pathlib import Path

import pytest

from crt_bench.analysis.metrics import acr, certified_accuracy
from crt_bench.certify.resumable import certify_run
from crt_bench.config.certify import CertifyConfig
from crt_bench.data.fashion_mnist import DEBIAN_FASHION_MNIST_DIR
from crt_bench.store.store import ResultsStore
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.trainer import train_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_fashion_mnist_gaussian_teacher_then_crt_student(tmp_path: Path):
    assert Path(DEBIAN_FASHION_MNIST_DIR).is_dir(), "install Debian's dataset-fashion-mnist (as .ci/run does)"
    store = ResultsStore(tmp_path)
    common = dict(profile="cpu", epochs=2, train_limit=6000, device="cpu")
    teacher = train_run(resolve_run_config("gaussian", "resnet20", **common), store, progress=False)
    student = train_run(resolve_run_config("crt", "resnet20", teacher=teacher, **common), store, progress=False)
    epochs = store.read("epochs")
    for run in (teacher, student):
        last = epochs[epochs["run_id"] == run].sort_values("epoch").iloc[-1]
        assert last["noisy_test_acc"] > 0.6, f"{run} learned Fashion-MNIST under sigma=0.25 noise"
    ccfg = CertifyConfig(n0=100, n=1000, alpha=0.001, batch=500, subset="skip:250")
    for run in (teacher, student):
        _, rows = certify_run(run, store, ccfg, device="cpu", progress=False)
        assert len(rows) == 40
        assert certified_accuracy(rows, [0.0]).iloc[0] > 0.5
        assert acr(rows) > 0.1

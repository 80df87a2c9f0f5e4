"""Fixtures of the tests against the real packages (torch, transformers,
tokenizers, safetensors, residuals; pins in tests/requirements-hf.txt).

The binary is $RESIDFS_BIN (default <repo>/build/fs/residfs).  Models are built
once per session (tiny, random, fixed seeds) in a temporary directory; the
`residuals` package computes their residuals.  Nothing is downloaded
(HF_HUB_OFFLINE=1).  Tests that mount skip only when /dev/fuse is missing;
every mount is unmounted in teardown (fusermount3 -u, then -uz) and a
session hook unmounts anything left.
"""
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hfcheck as C  # noqa: E402
import hfmodels as M  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()
torch.set_num_threads(2)

#: every base: 3 architectures x 3 dtypes x (sharded, single file)
ALL = [f"{a}_{d}_{s}" for a in M.ARCHS for d in M.DTYPES for s in ("sharded", "single")]
#: one of each architecture x dtype (sharded), for the longer grids
SHARDED = [k for k in ALL if k.endswith("_sharded")]
#: one per architecture
ONE_PER_ARCH = [f"{a}_bf16_sharded" for a in M.ARCHS]


def pytest_sessionfinish(session, exitstatus):
    for mp in C.Mounter.registry:
        C.unmount(mp)


@pytest.fixture(scope="session")
def binary():
    b = C.residfs_bin()
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"residfs binary not found at {b}: build it or set RESIDFS_BIN")
    return b


class Zoo:
    """Pairs built on first use, once per session."""

    def __init__(self, root):
        self.root = root
        self.pairs = {}

    def __call__(self, key):
        if key not in self.pairs:
            arch, dtype, layout = key.split("_")
            seed = 1000 + 10 * ALL.index(key)
            self.pairs[key] = M.build_pair(os.path.join(self.root, key), arch, dtype,
                                           layout == "sharded", seed)
        return self.pairs[key]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    return Zoo(str(tmp_path_factory.mktemp("hfzoo")))


@pytest.fixture
def mounter(tmp_path, binary):
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing: cannot mount")
    m = C.Mounter(str(tmp_path))
    yield m
    leaked = m.cleanup()
    assert not leaked, f"could not unmount {leaked}"

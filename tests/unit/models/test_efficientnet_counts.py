"""EfficientNet rows with their resolution and counting convention: B2 at its native 260x260
matches the published 1.0 B multiply-adds, and one convention (multiply-adds plus one
operation per batch-norm and activation output) reproduces both of the HFSL paper's Table 2
figures: B2 1.020 B (at 260x260, B2's native size) and B2s 0.421 B (at 224x224, Table 1)."""

import pytest

from splitbench.models import build_model
from splitbench.models.efficientnet import operation_counts


@pytest.fixture(scope="module")
def counts():
    return {
        (name, size): operation_counts(build_model(name, 1000, (3, size, size)), size)
        for name, size in (("efficientnet_b2", 260), ("efficientnet_b2", 224), ("efficientnet_b2s", 224))
    }


def test_b2_at_260_matches_the_published_multiply_adds(counts):
    # Tan & Le, "EfficientNet" (ICML 2019), Table 2: EfficientNet-B2, 9.2M parameters, 1.0B FLOPS
    # (multiply-adds), input 260x260
    assert counts["efficientnet_b2", 260]["mult_adds"] / 1e9 == pytest.approx(1.0, rel=0.02)


def test_one_convention_reproduces_the_hfsl_papers_table_2(counts):
    assert counts["efficientnet_b2", 260]["with_elementwise"] / 1e9 == pytest.approx(1.020, rel=0.01)
    assert counts["efficientnet_b2s", 224]["with_elementwise"] / 1e9 == pytest.approx(0.421, rel=0.01)
    # the paper's B2 figure is at 260, its B2s figure at 224: at equal resolution the
    # reduction is about 38%, not the paper's 58.7%
    same = 1 - counts["efficientnet_b2s", 224]["with_elementwise"] / counts["efficientnet_b2", 224]["with_elementwise"]
    assert same == pytest.approx(0.38, abs=0.02)
    # multiply-adds alone at 224: 0.401 B (the figure that differed from 0.421)
    assert counts["efficientnet_b2s", 224]["mult_adds"] / 1e9 == pytest.approx(0.401, abs=0.001)

"""Non-reversible counterparts: MS-ResNet and Spikingformer."""

import pytest
import torch

import revsnn
from revsnn_model_helpers import assert_modes_agree, max_rel, rel, run_step


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "name,count,depth", [("ms_resnet18", 11_220_132, 18), ("ms_resnet34", 21_328_292, 34)]
)
def test_ms_resnet_parameter_counts(name, count, depth):
    m = revsnn.create_model(name, num_classes=100)
    assert n_params(m) == count and m.depth == depth


def test_spikingformer_shares_revsformer_tokenizer_and_branches():
    sf = revsnn.create_model("spikingformer_4_384")
    rf = revsnn.create_model("revsformer_4_384")
    tok = n_params(rf.tokenizer)
    assert n_params(sf.tokenizer) == tok
    # Same F/G per block on D channels; the head reads D instead of 2D channels.
    assert n_params(sf.blocks) == n_params(rf.blocks)
    assert n_params(sf) == n_params(rf) - 384 * 10
    assert sf.depth == 4 and sf.embed_dim == 384


@pytest.mark.parametrize("name", ["ms_resnet_test", "spikingformer_test"])
def test_checkpoint_equals_none_and_reversible_is_rejected(name):
    torch.manual_seed(0)
    m = revsnn.create_model(name, memory_mode="none").double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 2
    assert_modes_agree(m, x, ["checkpoint"], tol=1e-12)
    with pytest.raises(ValueError, match="does not support memory_mode='reversible'"):
        m.set_memory_mode("reversible")
    with pytest.raises(ValueError, match="does not support memory_mode='reversible'"):
        revsnn.create_model(name, memory_mode="reversible")


@pytest.mark.parametrize("name", ["ms_resnet_test", "spikingformer_test"])
def test_lean_variant_matches_plain(name):
    torch.manual_seed(1)
    plain = revsnn.create_model(name).double()
    lean = revsnn.create_model(name, lean=True).double()
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 2
    a, b = run_step(lean, "none", x), run_step(plain, "none", x)
    assert torch.equal(a["y"], b["y"])
    assert max_rel(a["grads"], b["grads"]) < 1e-10 and rel(a["dx"], b["dx"]) < 1e-10


@pytest.mark.parametrize("name", ["ms_resnet_test", "spikingformer_test"])
def test_shapes_and_errors(name):
    m = revsnn.create_model(name, num_classes=3)
    for shape in [(2, 3, 8, 8), (2, 3, 28, 28), (2, 2, 3, 8, 8)]:
        assert m(torch.randn(*shape)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"C=3"):
        m(torch.randn(2, 2, 8, 8))
    with pytest.raises(ValueError, match=r"expected \[T=2, B, 3, H, W\]"):
        m(torch.randn(4, 2, 3, 8, 8))
    m.reset_classifier(6)
    assert m(torch.randn(1, 3, 8, 8)).shape == (1, 6)

"""RevSFormer: parameter counts, memory-mode oracle, shapes, input errors."""

import pytest
import torch

import revsnn
from revsnn.measure import saved_tensor_bytes
from revsnn.models.revsformer import RevSFormer
from revsnn_model_helpers import assert_modes_agree, global_rel, max_rel, rel, run_step


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "name,count", [("revsformer_2_384", 5_766_586), ("revsformer_4_384", 9_323_962),
                   ("revsformer_2_256", 2_569_739)],
)
def test_parameter_counts(name, count):
    m = revsnn.create_model(name)  # 10 classes / 12 heads; 2_256: 11 classes, 16 heads
    assert n_params(m) == count
    assert m.depth == int(name.split("_")[1])


@pytest.mark.parametrize("frames", [False, True])
def test_modes_agree_float64(frames):
    torch.manual_seed(0)
    m = revsnn.create_model("revsformer_test", memory_mode="none").double()
    x = torch.randn((2, 2, 3, 8, 8) if frames else (2, 3, 8, 8), dtype=torch.float64) * 2
    out = assert_modes_agree(m, x, ["checkpoint", "reversible"], tol=1e-10)
    rev = out["reversible"]["model"]
    assert rev.blocks.recompute_count == 2 * rev.depth
    assert [s.recompute_count for s in rev.tokenizer.stages] == [1, 1, 0, 0]
    assert rev.tokenizer.stem.recompute_count == 1


def test_modes_agree_float32_bounded():
    torch.manual_seed(1)
    m = revsnn.create_model("revsformer_test", memory_mode="none")
    x = torch.randn(3, 3, 8, 8) * 2
    ref, rev = run_step(m, "none", x), run_step(m, "reversible", x)
    assert torch.equal(rev["y"], ref["y"])
    # float32 reconstruction rounding (~1e-7) reaches the gradients at that level (a zero-mean
    # bias in front of BN carries only rounding noise, hence the looser per-tensor bound).
    assert rel(rev["dx"], ref["dx"]) < 1e-4
    assert global_rel(rev["grads"], ref["grads"]) < 1e-4
    assert max_rel(rev["grads"], ref["grads"]) < 1e-2
    for k, v in ref["bufs"].items():
        assert torch.equal(rev["bufs"][k], v)


def test_lean_primitives_match_plain_model():
    torch.manual_seed(2)
    lean = revsnn.create_model("revsformer_test", memory_mode="none").double()
    plain = revsnn.create_model("revsformer_test", memory_mode="none", lean=False).double()
    plain.load_state_dict(lean.state_dict())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 2
    a, b = run_step(lean, "none", x), run_step(plain, "none", x)
    assert torch.equal(a["y"], b["y"])
    assert max_rel(a["grads"], b["grads"]) < 1e-10 and rel(a["dx"], b["dx"]) < 1e-10


@pytest.mark.parametrize("hw,c", [(8, 3), (28, 1), (32, 3)])
def test_input_sizes(hw, c):
    m = revsnn.create_model("revsformer_test", in_channels=c, num_classes=4)
    assert m(torch.randn(2, c, hw, hw)).shape == (2, 4)
    assert m(torch.randn(2, 2, c, hw, hw)).shape == (2, 4)


def test_event_model_published_size():
    m = revsnn.create_model("revsformer_2_256", T=2, memory_mode="none")
    with torch.no_grad():
        assert m(torch.rand(2, 1, 2, 64, 64)).shape == (1, 11)


def test_bad_input_errors():
    m = revsnn.create_model("revsformer_test")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\] with C=3"):
        m(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"frames \[T, B, 3, H, W\]"):
        m(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"expected \[T=2, B, 3, H, W\]"):
        m(torch.randn(3, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible"):
        RevSFormer(depth=1, embed_dim=20, num_heads=3)


def test_reversible_saves_little_and_flat_in_depth():
    x = torch.randn(2, 3, 8, 8)

    def saved(m):
        ex = list(m.parameters()) + list(m.buffers())
        return saved_tensor_bytes(lambda: m(x).sum(), exclude=ex)

    torch.manual_seed(0)
    s1 = saved(RevSFormer(depth=1, embed_dim=16, num_heads=2, T=2))
    s4 = saved(RevSFormer(depth=4, embed_dim=16, num_heads=2, T=2))
    assert s1 == s4
    m = RevSFormer(depth=4, embed_dim=16, num_heads=2, T=2, memory_mode="none")
    assert saved(m) > 5 * s4
    # Recomputing every tokenizer stage saves less still (the pooled ones are kept by default).
    m = RevSFormer(depth=4, embed_dim=16, num_heads=2, T=2, memory_mode={"*": "reversible"})
    assert set(m.memory_plan().values()) == {"reversible"}
    assert saved(m) < s4

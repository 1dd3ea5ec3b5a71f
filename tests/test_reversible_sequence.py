"""The reversible engine against its oracle (plain autograd), in float64 and float32."""

import copy

import pytest
import torch

from reversible_helpers import make_sequence, rel_err, run_mode
from revsnn.reversible import MemoryMode
from revsnn.reversible.check import CallCounter, check_invertible, reconstruction_error
from revsnn.spiking import IF, LIF

KINDS = ["rev", "para", "para_merged"]


def _input(T, dtype=torch.float64, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, 2, 2 * c, 5, 5, generator=g, dtype=dtype) * 1.5


# A single ParaRev block has no G/F' pair to merge, so merged sequences start at depth 2.
CASES = [(k, d) for k in KINDS for d in (1, 6) if not (k == "para_merged" and d == 1)]
CASES.append(("para_merged", 2))


def grads_err(got, ref):
    """Max error over every parameter gradient, relative to the largest gradient."""
    scale = max(float(g.abs().max()) for g in ref.values())
    return max(float((got[n] - ref[n]).abs().max()) for n in ref) / scale


@pytest.mark.parametrize("kind,depth", CASES)
@pytest.mark.parametrize("T", [1, 4])
def test_modes_equal_oracle_float64(kind, depth, T):
    torch.manual_seed(depth * 10 + T)
    seq = make_sequence(kind, depth).double()
    x = _input(T)
    ref = run_mode(seq, "none", x)
    assert ref["y"].abs().sum() > 0
    for mode in ("checkpoint", "reversible"):
        got = run_mode(seq, mode, x)
        assert rel_err(got["y"], ref["y"]) <= 1e-12
        assert rel_err(got["dx"], ref["dx"]) <= 1e-10
        assert got["grads"].keys() == ref["grads"].keys()
        assert grads_err(got["grads"], ref["grads"]) <= 1e-10
        for n in ref["bufs"]:  # BN statistics updated exactly once
            assert torch.allclose(
                got["bufs"][n].double(), ref["bufs"][n].double(), rtol=0, atol=1e-13
            ), n
        assert torch.equal(got["rng"], ref["rng"])


@pytest.mark.parametrize("kind", ["rev", "para"])
def test_oracle_equals_plain_loop_of_blocks(kind):
    torch.manual_seed(1)
    seq = make_sequence(kind, 3).double()
    x = _input(2)
    ref = run_mode(seq, "none", x, seed=3)
    s = copy.deepcopy(seq)
    torch.manual_seed(3)
    x1, x2 = x.chunk(2, dim=2)
    for blk in s.blocks:
        x1, x2 = blk(x1, x2)
    assert torch.equal(torch.cat([x1, x2], dim=2), ref["y"])


@pytest.mark.parametrize("kind", KINDS)
def test_one_sgd_step_gives_equal_weights_and_bn_buffers(kind):
    torch.manual_seed(2)
    seq = make_sequence(kind, 3).double()
    x = _input(3)
    states = {}
    for mode in ("none", "checkpoint", "reversible"):
        r = run_mode(seq, mode, x)
        opt = torch.optim.SGD(r["module"].parameters(), lr=0.5, momentum=0.9)
        opt.step()
        states[mode] = r["module"].state_dict()
    assert states["none"].keys() == states["reversible"].keys() == states["checkpoint"].keys()
    for mode in ("checkpoint", "reversible"):
        for k, v in states["none"].items():
            assert torch.allclose(states[mode][k].double(), v.double(), rtol=0, atol=1e-12), k


def _spike_flips(seq, x):
    """Run reversible forward + backward recording every neuron's spikes; return flips, total."""
    records = {}

    def hook(name):
        def fn(_m, _i, out):
            records.setdefault(name, []).append(out.detach().clone())

        return fn

    handles = [
        m.register_forward_hook(hook(n)) for n, m in seq.named_modules() if isinstance(m, (IF, LIF))
    ]
    xr = x.clone().requires_grad_(True)
    seq(xr).sum().backward()
    for h in handles:
        h.remove()
    flips = sum(int((v[0] != v[1]).sum()) for v in records.values())
    total = sum(int(v[0].sum()) for v in records.values())
    return flips, total


@pytest.mark.parametrize("kind", KINDS)
def test_float32_error_is_bounded_and_flips_are_counted(kind):
    torch.manual_seed(4)
    seq = make_sequence(kind, 6, c=4)
    x = _input(4, torch.float32, c=4, seed=4)
    ref = run_mode(seq, "none", x)
    got = run_mode(seq, "reversible", x)
    s = copy.deepcopy(seq)
    s.memory_mode = "reversible"
    torch.manual_seed(7)
    flips, total = _spike_flips(s, x)
    err_dx = rel_err(got["dx"], ref["dx"])
    err_w = grads_err(got["grads"], ref["grads"])
    print(
        f"\n[{kind}] float32 depth 6 T 4: spikes {total}, flipped in recompute {flips}, "
        f"rel err dx {err_dx:.2e}, param grads {err_w:.2e}"
    )
    assert total > 100
    assert flips <= 1e-3 * total
    if flips == 0:
        assert err_dx <= 1e-4 and err_w <= 1e-4
    assert rel_err(got["y"], ref["y"]) == 0.0  # the forward itself is the same computation


@pytest.mark.parametrize("kind", ["rev", "para"])
def test_each_branch_runs_once_in_forward_and_once_in_backward(kind):
    torch.manual_seed(5)
    depth = 4
    seq = make_sequence(kind, depth)
    x = _input(2, torch.float32)
    names = {f"{k}{i}": getattr(b, k) for i, b in enumerate(seq.blocks) for k in ("f", "g")}
    for mode, expected in (("none", 1), ("reversible", 2), ("checkpoint", 2)):
        seq.memory_mode = mode
        with CallCounter(names) as calls:
            seq(x.clone().requires_grad_(True)).sum().backward()
        assert dict(calls) == {n: expected for n in names}, mode


def test_merged_module_runs_once_per_forward_and_once_per_backward():
    torch.manual_seed(6)
    depth = 5
    seq = make_sequence("para_merged", depth, memory_mode="reversible")
    mods = {f"M{k}": m for k, m in enumerate(seq.merged)}
    mods["F0"], mods["G_last"] = seq.blocks[0].f, seq.blocks[-1].g
    inner = {f"inner{k}": m.g for k, m in enumerate(seq.merged)}
    seq.recompute_count = 0
    with CallCounter({**mods, **inner}) as calls:
        y = seq(_input(2, torch.float32).requires_grad_(True))
        assert all(calls[n] == 1 for n in mods)
        y.sum().backward()
    assert all(calls[n] == 2 for n in mods) and all(calls[n] == 2 for n in inner)
    assert seq.recompute_count == depth + 1  # F0, depth-1 merged stages, G_last


@pytest.mark.parametrize("kind", KINDS)
def test_inverse_is_exact(kind):
    torch.manual_seed(8)
    seq = make_sequence(kind, 4).double()
    x = _input(3)
    assert reconstruction_error(seq, x) < 1e-13
    assert check_invertible(seq, x) < 1e-13
    seq.eval()
    assert (seq.inverse(seq(x)) - x).abs().max() < 1e-13


def test_memory_held_for_backward_is_flat_in_depth():
    from revsnn.measure import saved_tensor_bytes

    x = _input(4, torch.float32, c=4)

    def saved(depth, mode):
        torch.manual_seed(0)
        seq = make_sequence("rev", depth, c=4, memory_mode=mode)
        xr = x.clone().requires_grad_(True)
        return saved_tensor_bytes(lambda: seq(xr), exclude=list(seq.parameters()))

    rev2, rev12 = saved(2, "reversible"), saved(12, "reversible")
    none2, none12 = saved(2, "none"), saved(12, "none")
    ck2, ck12 = saved(2, "checkpoint"), saved(12, "checkpoint")
    print(
        f"\nsaved for backward (bytes): reversible {rev2} -> {rev12}, "
        f"checkpoint {ck2} -> {ck12}, none {none2} -> {none12} (depth 2 -> 12)"
    )
    assert rev12 <= 1.10 * rev2
    assert none12 >= 5.0 * none2
    assert rev12 < none12 / 20


def test_state_dict_keys_do_not_depend_on_mode():
    seq = make_sequence("para_merged", 3)
    keys = {}
    for mode in MemoryMode:
        seq.memory_mode = mode
        keys[mode] = list(seq.state_dict())
    assert keys[MemoryMode.NONE] == keys[MemoryMode.REVERSIBLE] == keys[MemoryMode.CHECKPOINT]


def test_deepcopy_runs_its_own_modules():
    seq = make_sequence("rev", 2).double()
    twin = copy.deepcopy(seq)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(2)
    x = _input(2)
    seq.eval(), twin.eval()
    assert not torch.equal(seq(x), twin(x))
    assert (twin.inverse(twin(x)) - x).abs().max() < 1e-13


def test_autocast_keeps_stream_float32_and_gradients_match():
    torch.manual_seed(9)
    seq = make_sequence("rev", 3)
    x = _input(2, torch.float32)
    res = {}
    for mode in ("none", "reversible"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            r = run_mode(seq, mode, x)
        res[mode] = r
        assert r["y"].dtype == torch.float32
    assert torch.equal(res["none"]["y"], res["reversible"]["y"])
    assert rel_err(res["reversible"]["dx"], res["none"]["dx"]) < 1e-2


@pytest.mark.parametrize("kind", KINDS)
def test_inplace_inverse_equals_oracle(kind):
    torch.manual_seed(11)
    seq = make_sequence(kind, 4, inplace_inverse=True).double()
    x = _input(3)
    ref = run_mode(seq, "none", x)
    got = run_mode(seq, "reversible", x)
    assert rel_err(got["y"], ref["y"]) <= 1e-12
    assert rel_err(got["dx"], ref["dx"]) <= 1e-10
    assert grads_err(got["grads"], ref["grads"]) <= 1e-10
    for n in ref["bufs"]:
        assert torch.allclose(got["bufs"][n].double(), ref["bufs"][n].double(), atol=1e-13)


def test_inplace_inverse_only_where_nobody_can_observe_it():
    """The in-place rebuild is used only when the graph is not retained and nothing else holds
    the output: a held output keeps its values and every later backward through a retained
    graph (a second backward, autograd.grad) equals plain autograd."""
    torch.manual_seed(12)
    seq = make_sequence("rev", 3, inplace_inverse=True).double()
    x0 = _input(2)

    def run(mode):
        s = copy.deepcopy(seq)
        s.memory_mode = mode
        x = x0.clone().requires_grad_(True)
        torch.manual_seed(3)
        y = s(x)
        y_before = y.detach().clone()
        loss = (y * y.detach().sin()).sum()
        loss.backward(retain_graph=True)
        intact = torch.equal(y.detach(), y_before)
        first = x.grad.clone()
        (g_x,) = torch.autograd.grad(loss, [x], retain_graph=True)
        loss.backward()
        return intact, first, g_x, x.grad

    ref = run("none")
    for mode in ("checkpoint", "reversible"):
        intact, first, g_x, second = run(mode)
        assert intact
        assert rel_err(first, ref[1]) <= 1e-10
        assert rel_err(g_x, ref[2]) <= 1e-10
        assert rel_err(second, 2 * ref[1]) <= 1e-10


def test_inplace_inverse_lowers_peak_memory():
    from revsnn.measure import AllocationTracker

    x = _input(4, torch.float32, c=8)

    def peak(inplace):
        torch.manual_seed(0)
        seq = make_sequence("rev", 3, c=8, inplace_inverse=inplace)
        xr = x.clone().requires_grad_(True)
        seq(xr).sum().backward()  # warm-up: parameter gradients exist before measuring
        xr.grad = None
        with AllocationTracker() as tr:
            seq(xr).sum().backward()
        return tr.peak

    assert peak(True) < peak(False)


@pytest.mark.parametrize("kind", ["rev", "para_merged"])
def test_parameter_gradients_are_accumulated_stage_by_stage(kind):
    """Each stage's parameter gradients reach ``.grad`` (and hooks such as DDP's) right after
    that stage's backward, not after the whole sequence: the last block's weights are
    accumulated before the first stage is recomputed."""
    depth = 3
    seq = make_sequence(kind, depth).double()
    seq.memory_mode = "reversible"
    seen = {}

    def hook(name):
        def record(p):
            seen[name] = seq.recompute_count

        return record

    last = seq.blocks[-1].g
    first = seq.blocks[0].f
    for name, m in (("last", last), ("first", first)):
        next(m.parameters()).register_post_accumulate_grad_hook(hook(name))
    seq.recompute_count = 0
    seq(_input(2).requires_grad_(True)).sum().backward()
    n_stages = seq.recompute_count
    assert seen["last"] == 1  # right after the last stage, the first one recomputed
    assert seen["first"] == n_stages


def test_functional_gradients_reach_parameters():
    """``torch.autograd.grad`` w.r.t. parameters works in reversible mode (no reliance on .grad)."""
    seq = make_sequence("rev", 2).double()
    x = _input(2)
    ref = copy.deepcopy(seq)
    ref.memory_mode = "none"
    seq.memory_mode = "reversible"
    params = list(seq.parameters())
    torch.manual_seed(3)
    g = torch.autograd.grad(seq(x).square().sum(), params, allow_unused=True)
    torch.manual_seed(3)
    g_ref = torch.autograd.grad(ref(x).square().sum(), list(ref.parameters()), allow_unused=True)
    assert all(p.grad is None for p in params)
    assert [a is None for a in g] == [b is None for b in g_ref]
    flat = torch.cat([a.flatten() for a in g if a is not None])
    flat_ref = torch.cat([b.flatten() for b in g_ref if b is not None])
    assert rel_err(flat, flat_ref) < 1e-10

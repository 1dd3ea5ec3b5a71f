"""NIR export and import: every family NIR can express, trained for a few steps (BatchNorm
statistics and PLIF time constants off their defaults), is written with ``nir.write``, read
back with ``nir.read`` and run by ``from_nir`` -- in float64 the logits equal the model's eval
forward to 1e-10 and every spike of every neuron is the same. SpikingJelly 2.0's importer runs
the same files and gives the same spikes. What NIR cannot express is one clear error."""

import importlib
import importlib.metadata

import numpy as np
import pytest
import torch
from torch import nn

import revsnn
from revsnn.cli import main as cli_main
from revsnn.export import ExportError, from_nir, to_nir
from revsnn.spiking.neuron import IF, LIF, PLIF, BaseNeuron

nir = pytest.importorskip("nir", reason="the nir extra is not installed (pip install "
                          "'revsnn[nir]')")

TOL = 1e-10


def _train(model: nn.Module, x: torch.Tensor, steps: int = 3) -> nn.Module:
    """A few SGD steps in float64: BN running statistics, weights and PLIF's w move."""
    torch.manual_seed(1)
    model.double().train()
    for bn in model.modules():  # running statistics = the average of the batches seen
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.momentum = None
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = x.shape[1] if x.dim() == 5 else x.shape[0]
    y = torch.randint(0, model.num_classes, (batch,))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model.eval()


def _static(name: str, scale: float = 3.0, **kw):
    info = revsnn.model_info(name)
    torch.manual_seed(0)
    m = revsnn.create_model(name, memory_mode="none", **kw)
    x = torch.rand(4, info.in_channels, info.image_size, info.image_size, dtype=torch.float64)
    return m, x * scale


def _frames(name: str, size: int = 16, T: int = 3, **kw):
    torch.manual_seed(0)
    m = revsnn.create_model(name, memory_mode="none", T=T, **kw)
    x = (torch.rand(T, 3, m.in_channels, size, size, dtype=torch.float64) < 0.3).double() * 2
    with torch.no_grad():  # the stem's pooling shrinks its output: a gain so that neurons fire
        m.stem.bn.weight.fill_(4.0)
    return m, x


CASES = {
    "revs_resnet_test": lambda: _static("revs_resnet_test"),
    # RevSNN-24 for event frames: event stem, LIF tau 1.5 (shrunk widths and blocks)
    "revs_resnet24_events": lambda: _frames("revs_resnet24", widths=(4, 8, 8), blocks=(1, 1, 2)),
    "pararevsnn_pair": lambda: _static("pararevsnn_test", merge="pair"),
    # the 'fused' kind with the pairs of stages before fuse_from evaluated as two branches
    "pararevsnn_fused_kind_unfused_stages": lambda: _static("pararevsnn_test", fuse_from=2),
    # ParaRevSNN-24 for events: PLIF with its learned tau
    "pararevsnn_resnet24_plif_pair": lambda: _frames(
        "pararevsnn_resnet24", widths=(4, 8, 8), blocks=(1, 2, 1), merge="pair"),
    "ms_resnet_test": lambda: _static("ms_resnet_test"),
    "revmlp_test": lambda: _static("revmlp_test"),
    # T-RevSNN's BPTT counterpart: WS convs, depthwise convs, layer scales, LIF (no input decay)
    "trevsnn_bptt_test": lambda: _static("trevsnn_bptt_test"),
}


def _model_spikes(model: nn.Module, x: torch.Tensor):
    """Eval logits and every neuron module's spikes [T, B, ...] by module name."""
    names = {id(m): n for n, m in model.named_modules()}
    spikes = {}
    hooks = [m.register_forward_hook(
        lambda mod, i, o: spikes.__setitem__(names[id(mod)], o.detach().clone()))
        for m in model.modules() if isinstance(m, BaseNeuron)]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, spikes


def _graph_neurons(graph):
    """NIR neuron node name -> (module name, channel range or None)."""
    out = {}
    for k, node in graph.nodes.items():
        if type(node).__name__ in ("IF", "LIF"):
            meta = node.metadata
            mod = meta["module"]
            mod = mod.decode() if isinstance(mod, bytes) else str(mod)
            ch = meta.get("channels")
            out[k] = (mod, None if ch is None else (int(ch[0]), int(ch[1])))
    return out


def _ours(spikes, mod, ch):
    s = spikes[mod]
    return s if ch is None else s[:, :, ch[0]:ch[1]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each family trained, exported, written and read back (computed once)."""
    d = tmp_path_factory.mktemp("nir")
    out = {}
    for name, make in CASES.items():
        model, x = make()
        _train(model, x)
        path = d / f"{name}.nir"
        nir.write(str(path), to_nir(model, x, name=name))
        out[name] = (model, x, nir.read(str(path)))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_logits_and_every_spike(exported, name):
    model, x, graph = exported[name]
    ref, spikes = _model_spikes(model, x)
    net = from_nir(graph)
    with torch.no_grad():
        out, trace = net.simulate(x)
    assert out.shape == (model.T,) + tuple(ref.shape)
    assert (out.mean(0) - ref).abs().max().item() <= TOL
    neurons = _graph_neurons(graph)
    # every neuron of the model is in the graph (whole, or as the halves of its stream)
    assert {m for m, _ in neurons.values()} == set(spikes)
    fired = 0
    for node, (mod, ch) in neurons.items():
        ours = _ours(spikes, mod, ch)
        assert torch.equal(trace[node], ours), f"{name}: spikes of {node} differ"
        fired += int(ours.sum())
    assert fired > 0  # the comparison is not between silent networks


def test_training_moved_the_state_off_its_defaults(exported):
    model, _, _ = exported["pararevsnn_resnet24_plif_pair"]
    taus = [float(m.tau_value().detach()) for m in model.modules() if hasattr(m, "w")]
    assert taus and all(np.isfinite(taus)) and any(abs(t - 2.0) > 1e-6 for t in taus)
    for m, _ in (exported[k][:2] for k in exported):
        bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
        assert all(not torch.equal(b.running_var, torch.ones_like(b.running_var)) for b in bns)


def test_graph_metadata_states_time_input_and_readout(exported):
    _, _, g = exported["revs_resnet_test"]
    assert int(g.metadata["T"]) == 2 and float(g.metadata["dt"]) == 1e-4
    assert int(g.metadata["input_repeat"]) == 1
    _, _, ev = exported["revs_resnet24_events"]
    assert int(ev.metadata["input_repeat"]) == 0 and int(ev.metadata["T"]) == 3


def test_neuron_mapping_follows_dt(exported):
    """IF: r = 1/dt; LIF: tau = tau_steps * dt, r = 1 (input decays), v_leak = v_reset."""
    model, x, _ = exported["revs_resnet24_events"]
    g = to_nir(model, x, dt=1e-3)
    lif = g.nodes["stages.0.blocks.0.f.sn1"]
    assert np.allclose(lif.tau, 1.5e-3) and np.all(lif.r == 1.0) and np.all(lif.v_leak == 0)
    model2, x2, _ = exported["revs_resnet_test"]
    node = to_nir(model2, x2, dt=1e-3).nodes["stages.0.blocks.0.f.sn1"]
    assert isinstance(node, nir.IF) and np.allclose(node.r, 1e3)
    with torch.no_grad():
        out = from_nir(to_nir(model2, x2, dt=1e-3))(x2).mean(0)
    assert (out - model2(x2)).abs().max().item() <= TOL


@pytest.mark.parametrize("dt", [1e-4, 1e-3])
@pytest.mark.parametrize("make", [
    lambda: IF(),
    lambda: IF(v_threshold=0.7, v_reset=-0.2),
    lambda: LIF(tau=1.5),
    lambda: LIF(tau=2.0, decay_input=False, v_threshold=0.5),
    lambda: LIF(tau=3.0, v_reset=-0.3),
    lambda: _plif(),
], ids=["if", "if_reset", "lif", "lif_no_input_decay", "lif_reset", "plif"])
def test_exported_neuron_reproduces_spikes_and_membrane(make, dt):
    """Each neuron's NIR node, stepped with dt by the reader, gives our spikes and our final
    membrane (to rounding) over many steps of continuous input."""
    from revsnn.export.neurons import NeuronStep, neuron_node
    from revsnn.spiking.neuron import multi_step

    torch.manual_seed(0)
    n = make().double()
    x = torch.randn(24, 8, 16, dtype=torch.float64) * 1.2
    with torch.no_grad():
        s, v = multi_step(n, x)
    step = NeuronStep(neuron_node(n, (16,), dt, "n", {}), dt, torch.float64, True, "n")
    state, out = None, []
    for t in range(x.shape[0]):
        z, state = step.step(state, x[t])
        out.append(z)
    assert 0 < s.mean() < 1
    assert torch.equal(torch.stack(out), s)
    assert (state - v).abs().max().item() <= 1e-12


def _plif():
    n = PLIF(tau_init=3.0)
    with torch.no_grad():
        n.w.add_(0.4)  # a learned tau away from its initial value
    return n


def _spikingjelly_importer():
    try:
        version = importlib.metadata.version("spikingjelly")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("SpikingJelly 2.0 is not installed (its importer "
                    "activation_based.nir_exchange is the other library checked)")
    if not version.startswith("2."):
        pytest.skip(f"SpikingJelly {version} installed; its NIR importer is checked with 2.0")
    try:
        mod = importlib.import_module("spikingjelly.activation_based.nir_exchange")
    except ImportError as err:
        pytest.skip(f"SpikingJelly {version}'s NIR importer cannot be imported: {err}")
    return mod.import_from_nir, version


@pytest.mark.parametrize("name", list(CASES))
def test_spikingjelly_runs_the_exported_graph_with_the_same_spikes(exported, name):
    """SpikingJelly 2.0's ``import_from_nir`` (its own IF/LIF nodes, nirtorch's executor) runs
    the file we wrote, one step at a time: the same spikes and logits as our model."""
    import_from_nir, _ = _spikingjelly_importer()
    model, x, graph = exported[name]
    ref, spikes = _model_spikes(model, x)
    gm = import_from_nir(graph, dt=float(graph.metadata["dt"]), dtype=torch.float64)
    mods = dict(gm.named_modules())
    neurons = _graph_neurons(graph)
    seen = {k: [] for k in neurons}
    hooks = [mods[k.replace(".", "_")].register_forward_hook(
        lambda m, i, o, k=k: seen[k].append(o[0].detach().clone())) for k in neurons]
    steps = list(x.unbind(0)) if x.dim() == 5 else [x] * model.T
    state, outs = None, []
    with torch.no_grad():
        for xt in steps:
            o, state = gm(xt, state)
            outs.append(o)
    for h in hooks:
        h.remove()
    assert (torch.stack(outs).mean(0) - ref).abs().max().item() <= TOL
    for k, (mod, ch) in neurons.items():
        assert torch.equal(torch.stack(seen[k]), _ours(spikes, mod, ch)), k


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("name, says", [
    ("revsformer_test", "self-attention"),
    ("spikingformer_test", "self-attention"),
    ("trevsnn_test", "T different networks"),
    ("pararevsnn_test", "stages.0.merged.0.gn: the merged ParaRevSNN block normalises with "
                        "GroupNorm"),
])
def test_what_nir_cannot_express_is_refused(name, says):
    info = revsnn.model_info(name)
    m = revsnn.create_model(name)
    x = torch.rand(1, info.in_channels, info.image_size, info.image_size)
    with pytest.raises(ExportError, match=says):
        to_nir(m, x)


def test_max_pool_and_soft_reset_are_refused_naming_the_layer():
    m, x = _static("revs_resnet_test")
    m.downsamples[0].pool = nn.MaxPool2d(3, 2, 1)
    with pytest.raises(ExportError, match=r"^downsamples\.0\.pool: max pooling"):
        to_nir(m, x)
    m, x = _static("revs_resnet_test")
    m.head.neuron = IF(v_reset=None)
    with pytest.raises(ExportError, match=r"^head\.neuron: IF resets by subtracting"):
        to_nir(m, x)


def test_from_nir_refuses_cycles():
    n = 3
    g = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([n])),
               "a": nir.Affine(weight=np.eye(n), bias=np.zeros(n)),
               "lif": nir.LIF(tau=np.ones(n), r=np.ones(n), v_leak=np.zeros(n),
                              v_threshold=np.ones(n)),
               "output": nir.Output(np.array([n]))},
        edges=[("input", "a"), ("a", "lif"), ("lif", "a"), ("lif", "output")],
        type_check=False)
    with pytest.raises(ExportError, match="acyclic"):
        from_nir(g)


# ----------------------------------------------------------------------------- command
def test_export_command_writes_a_file_nir_reads(tmp_path, capsys):
    out = tmp_path / "m.nir"
    assert cli_main(["export", "--model", "revmlp_test", "--format", "nir", str(out)]) == 0
    g = nir.read(str(out))
    assert str(g.metadata["model"]) == "revmlp_test" and "output" in g.nodes
    assert "wrote" in capsys.readouterr().out


def test_export_command_from_a_checkpoint_equals_the_trained_model(tmp_path):
    from revsnn.train.checkpoint import save_checkpoint
    from revsnn.train.config import TrainConfig

    model, x = _static("revmlp_test")
    model = _train(model, x).float()
    cfg = TrainConfig(model="revmlp_test", T=2, data="digits").to_dict()
    ck = save_checkpoint(tmp_path / "run" / "checkpoint.pt",
                         {"config": cfg, "epoch": 1, "global_step": 3,
                          "model": model.state_dict(), "ema": None})
    out = tmp_path / "trained.nir"
    assert cli_main(["export", "--checkpoint", str(ck.parent), "--format", "nir",
                     str(out)]) == 0
    with torch.no_grad():
        got = from_nir(str(out), dtype=torch.float64)(x).mean(0)
        want = model.double()(x)
    assert (got - want).abs().max().item() <= 1e-5  # float32 weights, run in float64


@pytest.mark.parametrize("args, says", [
    (["--model", "revmlp_test", "--format", "onnx"], "unknown format 'onnx'"),
    (["--model", "revsformer_test", "--format", "nir"], "cannot express the model in NIR: "
                                                        "RevSFormer: spiking self-attention"),
    (["--model", "pararevsnn_test", "--format", "nir"], "stages.0.merged.0.gn"),
    (["--model", "revmlp_test", "--format", "nir", "--input-shape", "3x8"], "--input-shape"),
    (["--checkpoint", "run", "--T", "4", "--format", "nir"], "go with --model"),
    (["--checkpoint", "missing_run", "--format", "nir"], "does not exist"),
])
def test_export_command_bad_input_is_one_line_exit_2_no_file(tmp_path, capsys, args, says):
    out = tmp_path / "m.nir"
    assert cli_main(["export", *args, str(out)]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_export_command_refuses_an_unwritable_path_and_an_existing_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli_main(["export", "--model", "revmlp_test", "--format", "nir",
                     str(blocker / "m.nir")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    out = tmp_path / "m.nir"
    out.write_text("keep")
    assert cli_main(["export", "--model", "revmlp_test", "--format", "nir", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "keep"
    assert cli_main(["export", "--model", "revmlp_test", "--format", "nir", str(out),
                     "--force"]) == 0
    assert nir.read(str(out)).nodes


def test_snntorch_runs_an_exported_lif_graph_with_the_same_spikes(exported):
    """snnTorch 1.0.0's ``import_from_nir`` (its Leaky neuron, float32) runs the RevMLP file
    (LIF neurons; its importer maps nir.IF to a leaky neuron, so IF graphs are not checked, and
    its Flatten ignores the batch dimension, so one sample at a time)."""
    try:
        version = importlib.metadata.version("snntorch")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("snnTorch 1.0.0 is not installed")
    if version != "1.0.0":
        pytest.skip(f"snnTorch {version} installed; its NIR importer is checked with 1.0.0")
    from snntorch.import_nir import import_from_nir

    model, x, graph = exported["revmlp_test"]
    model32 = revsnn.create_model("revmlp_test", memory_mode="none")
    model32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    model32.eval()
    for i in range(x.shape[0]):
        xi = x[i:i + 1].float()
        ref, spikes = _model_spikes(model32, xi)
        net = import_from_nir(to_nir(model32, xi))
        mods = dict(net.named_modules())
        neurons = _graph_neurons(graph)
        seen = {k: [] for k in neurons}
        hooks = [mods[k.replace(".", "_")].register_forward_hook(
            lambda m, i, o, k=k, seen=seen: seen[k].append(o[0] if isinstance(o, tuple) else o))
            for k in neurons]
        state, outs = None, []
        with torch.no_grad():
            for _ in range(model32.T):
                o, state = net(xi, state)
                outs.append(o)
        for h in hooks:
            h.remove()
        assert (torch.stack(outs).mean(0) - ref[0]).abs().max().item() <= 1e-5
        for k, (mod, ch) in neurons.items():
            ours = _ours(spikes, mod, ch)[:, 0]
            assert torch.equal(torch.stack(seen[k]).reshape(ours.shape), ours), k


def test_from_nir_runs_the_other_node_types_as_nir_defines_them():
    """SumPool2d, Flatten, Linear, Scale, Threshold (v > threshold) and a leaky integrator
    LI (tau dv/dt = v_leak - v + r I, Euler with dt) on a hand-built graph."""
    torch.manual_seed(0)
    dt, n = 1e-3, 8
    w = np.random.default_rng(0).standard_normal((n, 8))
    scale = np.linspace(0.5, 1.5, n)
    g = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([2, 4, 4])),
            "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                  padding=np.array([0, 0])),
            "flat": nir.Flatten(input_type={"input": np.array([2, 2, 2])}, start_dim=0),
            "lin": nir.Linear(weight=w),
            "scale": nir.Scale(scale=scale),
            "th": nir.Threshold(threshold=np.full(n, 0.3)),
            "li": nir.LI(tau=np.full(n, 4 * dt), r=np.full(n, 2.0), v_leak=np.full(n, 0.1)),
            "output": nir.Output(np.array([n])),
        },
        edges=[("input", "pool"), ("pool", "flat"), ("flat", "lin"), ("lin", "scale"),
               ("scale", "th"), ("th", "li"), ("li", "output")],
        metadata={"dt": dt})
    x = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    out = from_nir(g, T=3, dtype=torch.float64)(x)
    z = nn.functional.avg_pool2d(x, 2, 2, divisor_override=1).flatten(1)
    s = ((z @ torch.as_tensor(w).T) * torch.as_tensor(scale) > 0.3).double()
    v, want = torch.zeros_like(s), []
    for _ in range(3):
        v = v + (0.1 - v + 2.0 * s) / 4.0
        want.append(v)
    assert torch.allclose(out, torch.stack(want), atol=1e-12)

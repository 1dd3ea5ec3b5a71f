"""The claims table as data: ids, selection, formats, and one claim measured end to end."""

from __future__ import annotations

import dataclasses

import pytest

from revsnn.bench.claims import CLAIMS, TINY, Ratio, _ratio_fields, run_claims, select, tiny
from revsnn.bench.measure import Settings
from revsnn.bench.setups import create


def test_claim_records_are_complete_and_selected_by_id():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    for c in CLAIMS:
        assert c.statement and c.figure and c.source and c.ratios
        keys = {s.key for s in c.setups}
        assert all(r.num in keys and r.den in keys for r in c.ratios), c.id
        assert set(c.quantities) <= {"memory", "time", "energy"}
    assert [c.id for c in select(["trevsnn-time", "revsformer-memory"])] == [
        "revsformer-memory", "trevsnn-time"]  # table order
    assert select([]) == list(CLAIMS)
    with pytest.raises(ValueError, match="unknown claim id"):
        select(["no-such-claim"])
    # every model a claim names is registered (or a peer), and has a tiny stand-in
    import revsnn

    names = set(revsnn.list_models())
    for c in CLAIMS:
        for st in c.setups:
            assert ":" in st.model or (st.model in names and TINY[st.model] in names), st.model


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_every_format_fills_from_its_ratios(claim):
    s = Settings(ranges=((2, 4), (16, 32)))
    values = {}
    for st in claim.setups:
        v = {"mib_2_4": 2.0, "mib_16_32": 4.0, "median_wall_ms": 10.0, "median_cpu_ms": 8.0,
             "clock": "cpu_ms"}
        for rule in ("strict", "linear_chain"):
            v[rule] = {"energy_mj_per_image": 0.5}
        values[st.key] = v
    fields = {}
    for r in claim.ratios:
        fields.update(_ratio_fields(r, values, s))
    text = claim.format.format(**fields, clock="process CPU time")
    assert "{" not in text and text


def test_ratio_fields_are_the_quotients_of_the_measured_values():
    s = Settings(ranges=((2, 4), (16, 32)))
    values = {"a": {"mib_2_4": 6.0, "mib_16_32": 9.0, "median_cpu_ms": 30.0,
                    "median_wall_ms": 40.0, "clock": "cpu_ms"},
              "b": {"mib_2_4": 2.0, "mib_16_32": 3.0, "median_cpu_ms": 20.0,
                    "median_wall_ms": 50.0, "clock": "cpu_ms"}}
    m = _ratio_fields(Ratio("m", "memory", "a", "b"), values, s)
    assert (m["m_2_4"], m["m_16_32"], m["m_first"], m["m_last"]) == (3.0, 3.0, 3.0, 3.0)
    assert m["m_at"] == "3.00× at batch 2→4, 3.00× at 16→32"
    t = _ratio_fields(Ratio("t", "time", "a", "b"), values, s)
    assert t["t"] == t["t_cpu"] == 1.5 and t["t_wall"] == 0.8 and t["t_change"] == "50.0% more"
    t = _ratio_fields(Ratio("t", "time", "b", "a"), values, s)
    assert t["t_change"] == "33.3% less"


def test_one_claim_end_to_end_on_tiny_models():
    claim = tiny(select(["revsresnet37-memory"])[0])
    assert [st.model for st in claim.setups] == ["ms_resnet_test", "revs_resnet_test"]
    s = Settings(ranges=((1, 2),), image_size=8)
    (row,) = run_claims([claim], s)
    ms, rev = row["values"]["ms34"], row["values"]["rev37"]
    assert row["ratios"]["r_1_2"] == pytest.approx(ms["mib_1_2"] / rev["mib_1_2"])
    assert ms["mib_1_2"] > rev["mib_1_2"] > 0  # the reversible network keeps less
    assert row["measured"].startswith("less: ") and "MiB/img" in row["details"]
    assert ms["params"] == sum(p.numel() for p in create("ms_resnet_test").parameters())


def test_a_claim_with_a_missing_peer_is_skipped_with_the_reason(monkeypatch):
    import revsnn.bench.peers as peers

    monkeypatch.setattr(peers, "peer_unavailable_reason",
                        lambda name, device="cpu": "not installed: pip install ..."
                        if ":" in name else "")
    claim = dataclasses.replace(select(["spikingjelly-ms-resnet34"])[0])
    (row,) = run_claims([claim], Settings(ranges=((1, 2),)))
    assert row["measured"] == "skipped" and row["skipped"].startswith("not installed")

"""The model families of the registry: what every variant of a family shares."""

from .registry import Family

__all__ = ["REVSNN", "PARAREVSNN", "TREVSNN", "MSRESNET", "SPIKINGFORMER", "TREVSNN_BPTT"]

REVSNN = Family("revsnn", "Zhang & Zhang, AAAI 2024 (arXiv 2312.07922)",
                "reversible spiking blocks y1 = x1 + F(x2), y2 = x2 + G(y1)")
PARAREVSNN = Family("pararevsnn", "Xu et al., AAAI 2026 (arXiv 2508.01223)",
                    "swapped coupling y1 = x2 + F(x1), y2 = x1 + G(y1); G_k and F_k+1 fused")
TREVSNN = Family("trevsnn", "Hu et al., ICML 2024 (arXiv 2405.16466)",
                 "temporal-reversible columns c_k^t = L_k^t + alpha c_k^(t-1)")
MSRESNET = Family("msresnet", "Hu et al., IEEE TNNLS 2024 (arXiv 2112.08954); the RevSNN "
                  "paper's baseline", "non-reversible membrane-shortcut spiking ResNet")
SPIKINGFORMER = Family("spikingformer", "Zhou et al., arXiv 2304.11954; the RevSNN paper's "
                       "baseline", "non-reversible spiking transformer")
TREVSNN_BPTT = Family("trevsnn_bptt", "this library: T-RevSNN's standard-BPTT counterpart",
                      "T-RevSNN's levels with LIF neurons over T steps, trained by BPTT")

"""Exchange with other tools: the inference network of a revsnn model as a NIR graph
(Neuromorphic Intermediate Representation) and NIR graphs run back as torch modules.

``nir`` is an optional dependency (``pip install 'revsnn[nir]'``), imported when used::

    from revsnn.export import to_nir, from_nir
    graph = to_nir(model, sample_input)      # nir.NIRGraph of one time step
    nir.write("model.nir", graph)
    net = from_nir("model.nir")              # torch module: [B, C, H, W] -> [T, B, classes]
    logits = net(x).mean(0)                  # = model.eval()(x)

See ``docs/export.md`` for the neuron mapping, the supported families and the command
``revsnn export``.
"""

from .errors import ExportError, require_nir
from .neurons import DEFAULT_DT
from .nir_graph import REFUSED, SUPPORTED, to_nir
from .nir_import import NIRNetwork, from_nir

__all__ = ["to_nir", "from_nir", "NIRNetwork", "ExportError", "require_nir", "DEFAULT_DT",
           "SUPPORTED", "REFUSED"]

"""Memory planning: per-part memory modes that fit a memory budget at the least step time.

::

    import revsnn
    from revsnn import plan

    model = revsnn.create_model("revs_resnet37", num_classes=10, T=4)
    prof = plan.profile(model, torch.randn(16, 3, 32, 32))     # measured, on model's device
    sol = plan.solve(prof, batch_size=16, budget_bytes=plan.parse_bytes("600MiB"))
    sol.fits, sol.predicted_peak_bytes, sol.predicted_step_s
    model.set_memory_mode(sol.modes)                            # {"stages.0": "reversible", ...}

- :func:`profile` (:mod:`.profiler`): measures, per part and mode, the terms of the cost model
  (:mod:`.cost`): bytes kept for backward, forward and backward transients, time.
- :func:`solve` (:mod:`.solver`): the least-time plan whose predicted peak (parameters,
  gradients, optimiser state, batch, activations, transients) fits the budget -- or, when none
  fits, the leanest plan and by how much it misses; :func:`max_batch`: the largest batch that
  fits; :func:`predict`: any plan's predicted peak and step time.
- :func:`measure_plan` (:mod:`.measure`): a plan's measured peak and step time.
- ``revsnn plan --model NAME --batch B --budget 8GiB [--json]`` (:mod:`revsnn.train.plan_cli`).
"""

from ..units import format_bytes, parse_bytes
from .cost import Lin, Prediction, Profile, all_plans, predict
from .measure import measure_plan, measure_plans
from .parts import configurations, model_parts
from .profiler import profile
from .solver import Solution, least_peak, max_batch, solve

__all__ = [
    "Lin", "Prediction", "Profile", "Solution", "all_plans", "configurations", "format_bytes",
    "least_peak", "max_batch", "measure_plan", "measure_plans", "model_parts", "parse_bytes",
    "predict", "profile", "solve",
]

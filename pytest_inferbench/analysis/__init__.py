"""Analysis of run files with pandas: the frame, Pareto frontiers, the best configuration under
an SLO, cost and energy, batch-size scaling, roofline. The HTML report is built from these."""

from .cost import cost_per_million, with_cost
from .frame import ResultsError, load_results, read_runs
from .pareto import on_frontier, pareto_frontier, pareto_mask
from .roofline import model_work, roofline
from .scaling import BatchModel, batch_scaling, fit_batch_model
from .slo import best_under_slo, slo_check

__all__ = ["BatchModel", "ResultsError", "batch_scaling", "best_under_slo", "cost_per_million",
           "fit_batch_model", "load_results", "model_work", "on_frontier", "pareto_frontier",
           "pareto_mask", "read_runs", "roofline", "slo_check", "with_cost"]

"""Layer-by-layer analysis: depth in four senses, parameters, FLOPs (and, later, memory)."""

from layerwise.analysis.core import Analysis, BlockRow, Depth, KindRow, LayerRow, Totals, analyze
from layerwise.analysis.formulas import Formula, formula
from layerwise.analysis.plan import Plan, plan

# Strategies side by side, "will it fit?" and the measured step are jobs: layerwise.jobs.plan.
__all__ = ["Analysis", "BlockRow", "Depth", "Formula", "KindRow", "LayerRow", "Plan", "Totals", "analyze",
           "formula", "plan"]

"""Layer-by-layer analysis: depth in four senses, parameters, FLOPs (and, later, memory)."""

from layerwise.analysis.core import Analysis, BlockRow, Depth, KindRow, LayerRow, Totals, analyze
from layerwise.analysis.formulas import Formula, formula
from layerwise.analysis.plan import Measurement, Plan, measure, plan

__all__ = ["Analysis", "BlockRow", "Depth", "Formula", "KindRow", "LayerRow", "Measurement", "Plan", "Totals", "analyze",
           "formula", "measure", "plan"]

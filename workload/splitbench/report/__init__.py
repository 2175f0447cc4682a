"""The report of a suite, built from run records only (pandas + matplotlib)."""
from .build import build_report
from .summary import summarize

__all__ = ["build_report", "summarize"]

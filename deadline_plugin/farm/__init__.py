"""The local farm: Deadline's role on one machine (queue, workers, failure detection, deny lists)."""
from .cli import configure_parser, format_summary, main
from .runner import FarmResult, run_farm

__all__ = ["FarmResult", "configure_parser", "format_summary", "main", "run_farm"]

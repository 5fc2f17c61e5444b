"""`python -m atomic_publish.deadline_plugin.farm JOB_INFO PLUGIN_INFO ...`."""
import sys

from .cli import standalone

sys.exit(standalone())

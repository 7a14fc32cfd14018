"""Where did the planner go? Old names of `plan` and `workarea`, for bench/fanin.py only.

Nothing in src/ or tests/ imports this module; delete it once bench/fanin.py is moved over.
"""

from vcube.plan import Plan, PlannedFile, build_plan
from vcube.workarea import PLAN_KEY, source_location, work_location

__all__ = ["PLAN_KEY", "Plan", "PlannedFile", "build_plan", "source_location", "work_location"]

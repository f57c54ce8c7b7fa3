"""Model insights (issue 14): feature visualization, concepts (TCAV, CRAFT) and example-based explanations
of a whole model, run as long jobs split into parts (see :mod:`explain_core.insights.jobs`)."""

#: The function, its input prefix (``incoming/insights/``) and its results folder.
INSIGHTS = "insights"

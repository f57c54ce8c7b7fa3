"""Model insights: feature visualization, concepts (TCAV, CRAFT) and example-based explanations of a whole model.

Triggered through SQS by a job specification uploaded under ``incoming/insights/<model>/<version>/`` (a
``.json`` file, or POST /insights): plans the job into parts and queues one message per part on its own
queue; each part runs in one invocation, and once every part has an outcome the pictures and the report
are assembled in the results bucket (see explain_core.insights.handler).
"""

from explain_core.insights.handler import insights_lambda_handler

lambda_handler = insights_lambda_handler()

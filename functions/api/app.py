"""The REST API's catalog, upload and job routes: GET /models, GET /models/{name}/{version}, GET /methods,
POST /uploads, GET /jobs/{job_id} (see explain_core.api). Explanations go to the family functions.

A light image: no ML stack, so these routes start in well under a second.
"""

from explain_core.api import api_lambda_handler

lambda_handler = api_lambda_handler()

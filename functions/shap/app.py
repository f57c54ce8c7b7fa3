"""The SHAP family: Shapley-value explanations of image and tabular models (SHAP library).

Images: GradientExplainer, DeepExplainer, Partition explainer with an image masker, Kernel SHAP
over SLIC super-pixels. Tabular (CSV or JSON Lines): TreeExplainer for XGBoost models; Kernel,
Deep and Gradient explainers for Keras models. Triggered by S3 uploads under ``incoming/shap/``
through SQS and by POST /explanations/shap; writes to the results bucket (see explain_core.pipeline).

shap's numba functions load from the cache the image builds (explain_core.numba_cache). With
``SHAP_NUMBA_PRECOMPILE=init`` the init phase also compiles the few that cannot be cached, so the
first Partition request of an execution environment runs warm (docs/benchmark.md, cold start):
worth it with provisioned concurrency, where init runs before any request.
"""

import os

from explain_core.handler import family_lambda_handler

if os.environ.get("SHAP_NUMBA_PRECOMPILE") == "init":
    from explain_core.numba_cache import precompile

    precompile()

lambda_handler = family_lambda_handler("shap")

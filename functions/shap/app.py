"""The SHAP family: Shapley-value explanations of image and tabular models (SHAP library).

Images: GradientExplainer, DeepExplainer, Partition explainer with an image masker, Kernel SHAP
over SLIC super-pixels. Tabular (CSV or JSON Lines): TreeExplainer for XGBoost models; Kernel,
Deep and Gradient explainers for Keras models. Triggered by S3 uploads under ``incoming/shap/``
through SQS and by POST /explanations/shap; writes to the results bucket (see explain_core.pipeline).
"""

from explain_core.handler import family_lambda_handler

lambda_handler = family_lambda_handler("shap")

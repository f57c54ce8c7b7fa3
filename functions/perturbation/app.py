"""The perturbation family: black-box perturbation attributions (Occlusion, RISE, LIME, Kernel SHAP, Sobol, HSIC).

Triggered by S3 uploads under ``incoming/perturbation/`` through SQS and by POST /explanations/perturbation;
writes heatmaps, raw attributions and a manifest per image to the results bucket (see explain_core.pipeline).
"""

from explain_core.handler import family_lambda_handler

lambda_handler = family_lambda_handler("perturbation")

"""The gradient family: white-box gradient attributions (Saliency, Integrated Gradients, SmoothGrad, Grad-CAM, ...).

Triggered by S3 uploads under ``incoming/gradient/`` through SQS and by POST /explanations/gradient;
writes heatmaps, raw attributions and a manifest per image to the results bucket (see explain_core.pipeline).
"""

from explain_core.handler import family_lambda_handler

lambda_handler = family_lambda_handler("gradient")

"""Xplique explainers whose memory is bounded by their ``batch_size``, with Xplique's results.

Xplique 2.0.2 keeps the perturbations of SmoothGrad, VarGrad, SquareGrad, Rise, Lime, KernelShap,
Sobol, HSIC and MuFidelity within ``batch_size`` (its issue #137 is fixed there), but two methods
materialise more than a batch whatever ``batch_size`` says:

- IntegratedGradients builds an input's whole path at once: ``steps`` interpolated copies and their
  gradients (512 steps of a 1024x1024 image: 6 GB each) when ``batch_size < steps``;
- Occlusion builds every patch mask at the input's resolution before the first batch (the default
  16 px patch, 8 px stride on 1024x1024: 16,129 masks of 1 MB).

The classes below compute the same sums chunk by chunk; ``build_explainer`` builds them in place of
Xplique's (:func:`explainer_class`); the tests compare them with Xplique's classes.
"""

import math

import numpy as np
import tensorflow as tf
from xplique.attributions import IntegratedGradients, Occlusion
from xplique.attributions.base import WhiteBoxExplainer, sanitize_input_output
from xplique.commons import repeat_labels


def trapezoid_weights(steps: int) -> np.ndarray:
    """Weights of the path points ``linspace(0, 1, steps)``: 1/(steps-1), halved at both ends (they sum to 1)."""
    weights = np.full(steps, 1.0 / (steps - 1), dtype=np.float64)
    weights[[0, -1]] *= 0.5
    return weights


class PathChunkedIntegratedGradients(IntegratedGradients):
    """Integrated Gradients (Sundararajan et al., Axiomatic Attribution for Deep Networks (2017),
    https://arxiv.org/abs/1703.01365) with each input's path evaluated ``batch_size`` points at a time.

    The trapezoid rule is a weighted sum of the path's gradients (weight 1/(steps-1), halved at both
    ends), accumulated chunk by chunk; with ``steps <= batch_size`` Xplique's own loop is bounded already.
    """

    def explain(self, inputs, targets=None):
        if self.batch_size is None or self.steps <= self.batch_size:
            return super().explain(inputs, targets)
        return self._explain_in_chunks(inputs, targets)

    @sanitize_input_output
    @WhiteBoxExplainer._harmonize_channel_dimension
    def _explain_in_chunks(self, inputs, targets=None):
        batch_size = self.batch_size
        baseline = IntegratedGradients._get_baseline((*inputs.shape[1:],), self.baseline_value)
        alphas = tf.linspace(0.0, 1.0, self.steps)  # Xplique's path points
        weights = trapezoid_weights(self.steps).astype(np.float32)
        shape = (-1, *(1,) * (len(inputs.shape) - 1))
        explanations = []
        for row in range(len(inputs)):
            x, y = inputs[row:row + 1], targets[row:row + 1]
            total = tf.zeros_like(x)
            for start in range(0, self.steps, batch_size):
                end = min(self.steps, start + batch_size)
                points = baseline + tf.reshape(alphas[start:end], shape) * (x - baseline)
                gradients = self.batch_gradient(self.model, points, repeat_labels(y, end - start), batch_size)
                total += tf.reduce_sum(gradients * tf.reshape(weights[start:end], shape), axis=0, keepdims=True)
            explanations.append((x - baseline) * total)
        return tf.concat(explanations, axis=0)


class LazyMaskOcclusion(Occlusion):
    """Occlusion (Zeiler and Fergus, Visualizing and Understanding Convolutional Networks (2013),
    https://arxiv.org/abs/1311.2901) with each batch's patch masks made when that batch runs.

    Same anchors, order, batches and sums as Xplique's, so the maps are equal; only images (H, W, C) take
    this path, other inputs Xplique's.
    """

    def explain(self, inputs, targets=None):
        if len(np.shape(inputs)) != 4:
            return super().explain(inputs, targets)
        return self._explain_images(inputs, targets)

    @sanitize_input_output
    def _explain_images(self, inputs, targets=None):
        patch = self.patch_size if isinstance(self.patch_size, tuple) else (self.patch_size, self.patch_size)
        stride = self.patch_stride if isinstance(self.patch_stride, tuple) else (self.patch_stride,) * 2
        height, width = int(inputs.shape[1]), int(inputs.shape[2])
        anchors = [(x * stride[0], y * stride[1])
                   for x in range(math.ceil((height - patch[0] + 1) / stride[0]))
                   for y in range(math.ceil((width - patch[1] + 1) / stride[1]))]
        batch_size = self.batch_size or len(anchors)
        base_scores = self.batch_inference_function(self.model, inputs, targets, batch_size)
        maps = []
        for single_input, single_target, single_base_score in zip(inputs, targets, base_scores, strict=True):
            occlusion_map = tf.zeros((height, width))
            for start in range(0, len(anchors), batch_size):
                chunk = anchors[start:start + batch_size]
                masks = np.zeros((len(chunk), height, width), dtype=bool)
                for index, (x, y) in enumerate(chunk):
                    masks[index, x:x + patch[0], y:y + patch[1]] = True
                masks = tf.constant(masks)
                occluded = Occlusion._apply_masks(single_input, masks, self.occlusion_value)
                scores = self.inference_function(self.model, occluded,
                                                 repeat_labels(single_target[tf.newaxis, :], len(chunk)))
                occlusion_map += Occlusion._compute_sensitivity(single_base_score, scores, masks)
            maps.append(occlusion_map)
        return tf.expand_dims(tf.concat(maps, axis=0), axis=-1)  # each map is (1, H, W), as in Xplique


#: Registry classes whose memory Xplique does not bound by the batch, and their bounded subclasses.
BOUNDED = {IntegratedGradients: PathChunkedIntegratedGradients, Occlusion: LazyMaskOcclusion}


def explainer_class(spec):
    """The class :func:`explain_core.attribution.build_explainer` builds for a registry entry: its Xplique class,
    or that class's memory-bounded subclass."""
    cls = spec.explainer_class()
    return BOUNDED.get(cls, cls)

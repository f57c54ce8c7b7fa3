"""Benchmark the explanation methods, the functions' batching and the SHAP family, on the local emulator.

Sections (``--sections``, all by default), printed as plain-text tables and written to
``benchmark-results/benchmark.json``:

``methods``
    For each registry method a model supports (all three families) and each model: the raw
    library call (``explainer.explain()`` on the preprocessed batch, with an explainer built like
    the session builds it -- SHAP methods with the model's background, as ``LoadedModel.background``
    -- and warmed once on the same batch, so TensorFlow tracing and numba compilation are excluded),
    the real handler on an SQS event for uploads that name that single method (warm: a first
    upload warms it, a second one is timed), and the method's floor: model passes per image
    (``MethodSpec.passes``) x measured batched forward time per image. MobileNetV2 has no
    ``background.npy``, so the SHAP methods use their default background there; they stay in
    under ``--quick`` (measured 0.4-2 s per image with ``QUICK_OVERRIDES``; DeepExplainer fails
    on MobileNetV2, which uses Relu6, with a typed error).

``burst``
    Demo images uploaded under ``incoming/gradient/...``, processed one message per invocation
    vs batched as the template's SQS event source does (its ``BatchSize``).

``shap-vs-xplique``
    On the demo CNN, the same images and N model evaluations per image (``--shap-evals``):
    Xplique's KernelShap, our SuperpixelKernelExplainer and PartitionExplainer, and the raw shap
    calls they stand for (Kernel SHAP over SLIC segments as shap's example writes it and written
    for speed; the Partition explainer with ``f = model.predict`` and with a traced function).

``tabular``
    TreeExplainer on ``breast-cancer-xgb``; Kernel, Deep and Gradient explainers on
    ``breast-cancer-mlp``: the raw shap call, ours (via ``build_explainer``), the report's plots
    (``tabular_report.report_files``) and the handler on a CSV upload of the same rows
    (``--tabular-rows``).

``partition-profile``
    Where the Partition explainer's time goes on 4 demo images at max_evals=200 (the issue's
    "6.6 s"): first use in a fresh process, a warm call split into pieces, and variants (model
    function, batch size).

``text``
    Each text method on the demo LSTM over N held-out reviews (``--text-documents``), per
    document: the floor (registry passes x a measured forward, or forward + backward, pass), the
    raw Xplique or shap call a user would write, ours (``build_explainer`` + ``explain_document``)
    and the handler on a ``.jsonl`` upload.

``insights``
    Each insight kind on each model at the demo job's settings, one fresh subprocess each: the
    plan's estimated seconds vs the measured seconds per part and of the assembly, peak RSS
    (VmHWM) over a model-loaded baseline, and the MemorySize it recommends for InsightsFunction.

Findings of ``partition-profile`` (2 shared cores; shap 0.51, TensorFlow 2.20, 4 images, 200
evaluations, 3 explained classes; seconds for the 4 images):

    ======================================================  =========  ==============================
    what                                                    seconds    why
    ======================================================  =========  ==============================
    shap's naive call: f = model.predict, batch_size auto   5.1-6.8    92 predict calls of <= 10
                                                                       masks; predict's per-call
                                                                       set-up is ~95% of the time
    first use in a process (cold start), before the call    ~4-5       numba JIT of shap's partition
                                                                       tree (1.6-1.8) and mask matrix
                                                                       (2.3-2.8), not cached on disk
    ... and inside the first call                           1.4-2.1    numba JIT of the output
                                                                       averaging, TF tracing (0.1-0.2)
    PartitionExplainer, warm                                0.41-0.51  (floor: 800 rows, 0.13-0.20)
      model forward: traced tf.function, 32 calls           0.19-0.26  44-51%; batches 1, 1, 2, 8,
                                                                       32, 64, 64, 28 per image
      partition tree + mask matrix, rebuilt per class/call  0.07-0.09  14-20%
      owen: priority queue, masks, values                   0.05-0.06  12-13%
      pixels <-> model input round trip per masked batch    0.04-0.05  9-10%
      masking (blur computed once per image, copy per mask) 0.04       8%
      MaskedModel batching and output averaging             0.02       4%
    raw shap with f = tf.function, batch 64                 0.30-0.41  what PartitionExplainer wraps
    PartitionExplainer after the two changes below          0.24-0.33  0.55-0.71x the version above
    ======================================================  =========  ==============================

What PartitionExplainer does about it: a traced tf.function instead of ``model.predict`` (the 14x),
the session's batch_size (64) instead of shap's 10 (1.3x with a traced function), one explained
class per group of rows, and, since this profile: (1) the shap masker and explainer are kept per
image shape (the partition tree and mask matrix were rebuilt for every class on every call), and
(2) with ``masker="blur"`` shap masks the model-space images directly (a box blur commutes with
the card's per-channel affine preprocessing: attributions equal to 2e-9; inpainting still masks
pixels): 0.55-0.71x at 200 evaluations, 0.48x at 500 (1.10 -> 0.53 s for 4 images). A larger
batch_size barely matters now: owen's queue rarely holds more than 64 masks at these budgets, and
changing it changes which regions are refined first (attributions move by up to 5.7e-3). Not
done: the cold start (4-7 s of numba compilation per process) would move to the init phase if
the function compiled shap's numba code at import, e.g. one tiny Partition explanation of an 8x8
image (4.7 s once; the first real call then takes 0.63 s instead of ~7 s), a cost every cold
start of the shap function would pay whether or not it uses PartitionExplainer.

Models: ``demo`` is the project's demo CNN (64x64, a few shape classes, ``devtools.demo_model``);
``mobilenet`` is a MobileNetV2 (224x224, 1000 classes) with random weights, built here and
cached under ``.cache/benchmark/``. Parameter profiles: ``full`` uses the registry defaults,
``quick`` smaller overrides (``QUICK_OVERRIDES``) sent through the upload's ``params`` metadata;
``auto`` (the default) is ``full`` on the demo model and the tabular models, ``quick`` on
MobileNetV2.

Run from the repository root (about 3.5 minutes on 2 cores)::

    PYTHONPATH=.:layers/explain_core/src .venv/bin/python -m devtools.benchmark --models demo --quick

Modules: one per section (``methods``, ``burst``, ``shap_vs_xplique``, ``tabular``,
``partition_profile``), ``subjects`` (the models, the parameter profiles), ``harness`` (the local
emulator, published models, timed handlers: ``devtools.local``), ``timing`` (what the sections
share), ``report`` (the tables and their notes) and ``cli`` (the command line). The production
code is called, never copied: explainers through the registry and ``build_explainer``, the shap
image helpers from ``explain_core.shap_methods``, models through ``explain_core.frameworks``.
"""

import os

# Before TensorFlow, Powertools or explain_core is imported by any module of the package.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ServerlessExplanationsBenchmark")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

"""Section ``tabular``: TreeExplainer on ``breast-cancer-xgb``; Kernel, Deep and Gradient explainers
on ``breast-cancer-mlp``: the raw shap call, ours, the report's plots and the handler on a CSV upload."""

import time
from pathlib import Path

import numpy as np

from devtools import tabular_demo
from devtools.benchmark.harness import Harness, failure, upload_metadata
from devtools.benchmark.subjects import profile_overrides
from devtools.benchmark.timing import best_of, predict_forward, ratio
from explain_core.attribution import build_explainer, raw_outputs
from explain_core.frameworks import handler_for
from explain_core.modalities import modality_for
from explain_core.model_card import ModelCard
from explain_core.registry import REGISTRY, SHAP, MethodSpec
from explain_core.shap_methods import quiet

#: The tabular demo models and the methods benchmarked on each.
TABULAR_METHODS = {
    tabular_demo.XGB: ("TreeExplainer",),
    tabular_demo.MLP: ("KernelExplainer", "DeepExplainer", "GradientExplainer"),
}


#: A batch size for tabular rows: Kernel SHAP evaluates nb_samples x background rows per row.
TABULAR_WIDE_BATCH = 4096


def load_tabular(name: str, directory: Path):
    """(card, model, background) of a tabular demo model, loaded as the model store loads them."""
    card = ModelCard.model_validate_json((directory / "card.json").read_text())
    model = handler_for(card).load(str(directory / card.model_file), name, tabular_demo.VERSION)
    stored = np.load(directory / "background.npy", allow_pickle=False)
    return card, model, modality_for(card).prepare_background(stored, card)


def raw_tabular(spec: MethodSpec, model, background: np.ndarray, rows: np.ndarray, params: dict):
    """The shap call a user would write for this method, on the whole model (every output)."""
    import shap

    if spec.name == "TreeExplainer":
        return shap.TreeExplainer(model).shap_values(rows)
    if spec.name == "KernelExplainer":
        explainer = shap.KernelExplainer(predict_forward(model), background)
        np.random.seed(0)
        return explainer.shap_values(rows, nsamples=params["nb_samples"], l1_reg=False, silent=True)
    if spec.name == "DeepExplainer":
        return shap.DeepExplainer(model, background[: params["nb_background"]].astype(np.float32)).shap_values(
            rows.astype(np.float32))
    if spec.name == "GradientExplainer":
        return shap.GradientExplainer(model, background.astype(np.float32)).shap_values(
            rows.astype(np.float32), nsamples=params["nb_samples"], rseed=0)
    raise ValueError(f"no raw shap call for {spec.name}")


def tabular_explanation(spec: MethodSpec, card: ModelCard, model, rows, values, base_values, cls: int, batch: int):
    """The TabularExplanation the session builds for one explained class."""
    from explain_core.attribution import probabilities
    from explain_core.shap_methods import output_kind
    from explain_core.tabular_report import TabularExplanation

    outputs = raw_outputs(model, rows, card, batch)
    predicted = np.argmax(probabilities(outputs, card), axis=1)
    return TabularExplanation(
        method=spec.name, class_index=cls, class_name=card.class_name(cls), output_kind=output_kind(card),
        feature_names=list(card.feature_names), data=rows, values=np.asarray(values, dtype=np.float64),
        base_values=base_values, model_output=outputs[:, cls], line_numbers=list(range(2, len(rows) + 2)),
        predicted=[card.class_name(int(p)) for p in predicted],
    )


def measure_tabular_handler(harness: Harness, name: str, spec: MethodSpec, overrides: dict, rows: np.ndarray,
                            repeats: int) -> dict:
    """Warm handler time for one CSV upload of ``rows`` asking for ``spec`` (first upload warms it)."""
    source = harness.source(SHAP)
    metadata = upload_metadata(spec, overrides)
    runs = []
    # Plots make a CSV upload take about a second: at least two timed runs, or one is all noise.
    for phase in ["warm"] + [f"timed{i}" for i in range(max(repeats, 2))]:
        files = [(f"rows-{len(rows)}.csv", tabular_demo.sample_csv(rows), "text/csv")]
        keys = harness.upload_files(SHAP, name, tabular_demo.VERSION, f"{phase}-{spec.name}-{len(rows)}", files,
                                    metadata)
        source.invoke(harness.receive(SHAP, keys))
        found = harness.outcome(keys[0])
        runs.append((source.handler.durations[-1], found))
    seconds, found = min(runs[1:], key=lambda run: run[0])
    problem = failure(found)
    method = (found.get("methods") or [{}])[0]
    outputs = method.get("outputs") or [{}]
    return {"handler_s": seconds, "error": problem, "explain_s": method.get("seconds"),
            "additivity": outputs[0].get("additivity_max_error"), "timings": found.get("timings", {})}


def measure_tabular_in_process(spec: MethodSpec, card: ModelCard, model, background, rows, params: dict,
                               batch: int, repeats: int) -> dict:
    """Raw shap call, our explainer and the report (plots), each warm, best of ``repeats``."""
    from explain_core.tabular_report import report_files
    from explain_core.tabular_report import summary as tabular_summary

    cls = card.default_explained_classes()[0]
    targets = np.zeros((len(rows), len(card.class_names)), np.float32)
    targets[:, cls] = 1.0
    with quiet():
        raw_tabular(spec, model, background, rows, params)  # warm-up (tracing)
        raw_s, _ = best_of(repeats, lambda: raw_tabular(spec, model, background, rows, params))
        explainer = build_explainer(spec, model, card, params, batch, background)
        explainer.explain(rows, targets)  # warm-up
        ours_s, values = best_of(repeats, lambda: explainer.explain(rows, targets))
        # The same explainer with model calls of up to TABULAR_WIDE_BATCH rows (a tree model ignores it).
        wide = build_explainer(spec, model, card, params, TABULAR_WIDE_BATCH, background)
        wide.explain(rows, targets)
        wide_s, _ = best_of(repeats, lambda: wide.explain(rows, targets))
    explanation = tabular_explanation(spec, card, model, rows, values, explainer.base_values, cls, batch)
    # Plots take about a second, so one timing would be all noise: at least two.
    report_s, files = best_of(max(repeats, 2), lambda: report_files(explanation))
    return {"raw_s": raw_s, "ours_s": ours_s, "ours_wide_s": wide_s, "report_s": report_s,
            "plots": sum(f.name.endswith(".png") for f in files),
            "additivity": tabular_summary(explanation)["additivity"]["max_abs_error"]}


def benchmark_tabular(harness: Harness, args) -> list[dict]:
    """TreeExplainer on the XGBoost demo model; Kernel, Deep and Gradient explainers on the MLP."""
    directories = tabular_demo.ensure_tabular_models()
    batch = harness.session_batch_size(SHAP)
    profile = "full" if args.profile == "auto" else args.profile
    results = []
    for name, methods in TABULAR_METHODS.items():
        harness.publish_tabular(name, directories[name])
        card, model, background = load_tabular(name, directories[name])
        for spec in (REGISTRY[method] for method in methods):
            overrides = profile_overrides(spec, profile, (0, 0), args.params)
            params = spec.resolve(overrides, (0, 0))
            for count in args.tabular_rows:
                started = time.perf_counter()
                rows = tabular_demo.sample_rows(count)[0]
                row = {"model": name, "method": spec.name, "rows": count, "params": params, "profile": profile,
                       "error": None}
                try:
                    row.update(measure_tabular_in_process(spec, card, model, background, rows, params, batch,
                                                          args.repeats))
                except Exception as exc:  # report and go on
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                handler = measure_tabular_handler(harness, name, spec, overrides, rows, args.repeats)
                row["handler_s"] = handler["handler_s"]
                row["in_handler_explain_s"] = handler["explain_s"]
                row["handler_additivity"] = handler["additivity"]
                row["handler_timings"] = handler["timings"]
                row["error"] = row["error"] or handler["error"]
                row["ours_over_raw"] = ratio(row.get("ours_s"), row.get("raw_s"))
                if row.get("ours_s") is not None:
                    row["handler_other_s"] = row["handler_s"] - row["ours_s"] - row["report_s"]
                results.append(row)
                status = f"  FAILED {row['error']}" if row["error"] else ""
                print(f"[tabular] {name} {spec.name} {count} rows: {time.perf_counter() - started:.1f} s{status}",
                      flush=True)
    return results

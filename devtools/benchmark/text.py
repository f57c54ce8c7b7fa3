"""Section ``text``: each text method on the demo LSTM (``sentiment-lstm``), per document: its floor
(passes x one measured pass), the raw library call a user would write, ours (the modality's explainer)
and the real handler on a .jsonl upload of the same held-out reviews."""

import json
import time

import numpy as np

from devtools import text_demo
from devtools.benchmark.harness import Harness, failure, upload_metadata
from devtools.benchmark.subjects import profile_overrides
from devtools.benchmark.timing import FORWARD_BATCH, CountingForward, best_of, measure_forward, ratio
from explain_core.errors import ExplainError
from explain_core.frameworks import handler_for
from explain_core.modalities import modality_for
from explain_core.model_card import ModelCard
from explain_core.registry import GRADIENT, METHODS, MethodSpec
from explain_core.shap_methods import quiet

#: Timed runs of the one-pass measurements (the floor): a pass takes a millisecond or less, so three are noise.
PASS_REPEATS = 20


def load_text_model(directory):
    """(card, Keras model, TextModel) of the text demo, loaded as the model store loads them."""
    from explain_core.text_model import text_model

    card = ModelCard.model_validate_json((directory / "card.json").read_text())
    model = handler_for(card).load(str(directory / card.model_file), card.name, card.version)
    files = {name: (directory / name).read_bytes() for name in modality_for(card).companion_files(card)}
    return card, model, text_model(model, card, files)


def text_methods(specs: list[MethodSpec], card: ModelCard) -> list[MethodSpec]:
    """The selected methods that explain text models, in registry order."""
    selected = {spec.name for spec in specs}
    return [spec for spec in METHODS if spec.name in selected and spec.supports(card)]


def text_parameters(args) -> list[tuple[MethodSpec, dict, dict]]:
    """(spec, overrides, resolved parameters) of each selected text method; SystemExit when one is refused."""
    card = ModelCard.model_validate(text_demo.card())
    profile = "full" if args.profile == "auto" else args.profile
    size = modality_for(card).passes_size(card)
    plan = []
    for spec in text_methods(args.methods, card):
        overrides = profile_overrides(spec, profile, size, args.params)
        try:
            plan.append((spec, overrides, spec.resolve(overrides, size)))
        except ExplainError as exc:
            raise SystemExit(f"parameters refused for {spec.name} on {card.name}: {exc}") from exc
    return plan


def measure_gradient_pass(tm, ids: np.ndarray, batch: int = FORWARD_BATCH, repeats: int = PASS_REPEATS) -> float:
    """Seconds per document of a batched forward AND backward pass on the embeddings (traced, warm)."""
    import tensorflow as tf

    x = tf.constant(tm.embed(np.take(ids, np.arange(batch) % len(ids), axis=0)))
    tm.use_mask(ids[0])  # the gradient methods run with one document's padding mask, as here

    @tf.function
    def step(embeddings):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            score = tf.reduce_sum(tm.embeddings_model(embeddings, training=False)[:, 0])
        return tape.gradient(score, embeddings)

    step(x)  # trace
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.asarray(step(x))
        times.append(time.perf_counter() - started)
    return min(times) / batch


def raw_text(spec: MethodSpec, tm, model, params: dict, texts: list[str], ids: np.ndarray, targets: np.ndarray,
             batch: int):
    """The library call a user would write: Xplique on our cut models, or shap with its own Text masker."""
    import xplique.attributions as xa

    if spec.family == GRADIENT:
        # The embeddings model masks one document's padding per call, so a correct call is per document.
        explainer = spec.explainer_class()(tm.embeddings_model, batch_size=batch, **params)  # the Xplique class
        out = []
        for row in range(len(ids)):
            tm.use_mask(ids[row])
            out.append(np.asarray(explainer.explain(tm.embed(ids[row:row + 1]), targets[row:row + 1])))
        return out
    hidden = float(tm.tokenizer.padding_id if params.get("hide_with", "padding") == "padding" else tm.tokenizer.oov_id)
    if spec.name == "WordOcclusion":
        explainer = xa.Occlusion(tm.ids_model, batch_size=batch, patch_size=1, patch_stride=1,
                                 occlusion_value=hidden)
        return np.asarray(explainer.explain(ids.astype(np.float32), targets))
    if spec.name == "WordLime":
        # Xplique's default mapping for 2-D inputs: one feature per position (padding included).
        explainer = xa.Lime(tm.ids_model, batch_size=batch, ref_value=hidden, nb_samples=params["nb_samples"],
                            distance_mode="cosine", kernel_width=params["kernel_width"], prob=params["prob"])
        return np.asarray(explainer.explain(ids.astype(np.float32), targets))
    if spec.name == "TextPartitionExplainer":
        import shap

        def f(strings):  # what a shap user writes: tokenize each masked string, model.predict
            encoded = np.stack([tm.tokenizer.encode(str(s)).ids for s in strings]).astype(np.int32)
            return model.predict(encoded, verbose=0)

        explainer = shap.PartitionExplainer(f, shap.maskers.Text())
        np.random.seed(0)
        return explainer(texts, max_evals=params["max_evals"], silent=True)
    raise ValueError(f"no raw library call for {spec.name}")


def measure_text_in_process(spec: MethodSpec, card: ModelCard, model, tm, reviews: list[dict], ids, classes,
                            params: dict, batch: int, repeats: int) -> dict:
    """Raw library call and ours on the documents, each warm, best of ``repeats`` (seconds for all of them)."""
    texts = [review["text"] for review in reviews]
    encoded = [tm.tokenizer.encode(text) for text in texts]
    targets = np.zeros((len(ids), len(card.class_names)), np.float32)
    targets[np.arange(len(ids)), classes] = 1.0
    with quiet():
        # Warm-up: Xplique traces per batch shape, so on the same inputs; shap compiles its numba code on a
        # first Partition call, which two documents do (the whole set would double a long naive call).
        warm = slice(0, 2) if spec.name == "TextPartitionExplainer" else slice(None)
        raw_text(spec, tm, model, params, texts[warm], ids[warm], targets[warm], batch)
        raw_s, _ = best_of(repeats, lambda: raw_text(spec, tm, model, params, texts, ids, targets, batch))
        explainer = modality_for(card).build_explainer(spec, tm, card, params, batch)

        def ours():
            return [explainer.explain_document(e, text, [int(c)]) for e, text, c in zip(encoded, texts, classes,
                                                                                         strict=True)]

        ours()  # warm-up
        ours_s, _ = best_of(repeats, ours)
        rows = None
        if hasattr(explainer, "outputs"):  # shap's Partition: count the model rows it really evaluates
            explainer.outputs = CountingForward(explainer.outputs)
            ours()
            rows = sum(explainer.outputs.sizes)
    return {"raw_s": raw_s, "ours_s": ours_s, "model_rows": rows}


def measure_text_handler(harness: Harness, spec: MethodSpec, overrides: dict, reviews: list[dict],
                         repeats: int) -> dict:
    """Warm handler time for one .jsonl upload of the reviews asking for ``spec`` (first upload warms it)."""
    source = harness.source(spec.family)
    metadata = upload_metadata(spec, overrides)
    body = "".join(json.dumps({"text": review["text"]}) + "\n" for review in reviews).encode()
    runs = []
    # Each upload renders a PNG and HTML per document: at least two timed runs, or one is all noise.
    for phase in ["warm"] + [f"timed{i}" for i in range(max(repeats, 2))]:
        files = [(f"reviews-{len(reviews)}.jsonl", body, "application/x-ndjson")]
        keys = harness.upload_files(spec.family, text_demo.MODEL, text_demo.VERSION,
                                    f"{phase}-{spec.name}-{len(reviews)}", files, metadata)
        source.invoke(harness.receive(spec.family, keys))
        runs.append((source.handler.durations[-1], harness.outcome(keys[0])))
    seconds, found = min(runs[1:], key=lambda run: run[0])
    method = (found.get("methods") or [{}])[0]
    return {"handler_s": seconds, "error": failure(found), "explain_s": method.get("seconds"),
            "timings": found.get("timings", {})}


def benchmark_text(harness: Harness, args) -> list[dict]:
    """One row per text method: floor, raw, ours and handler seconds per document, and their ratios."""
    directory = text_demo.build()
    harness.publish_text()
    card, model, tm = load_text_model(directory)
    reviews = text_demo.test_reviews(args.text_documents)
    ids = np.stack([tm.tokenizer.encode(review["text"]).ids for review in reviews])
    # The handler explains the predicted class (the demo card's top_k=1), so every measurement does too.
    classes = np.asarray(tm.ids_model(ids.astype(np.float32), training=False)).argmax(axis=1)
    forward_s = measure_forward(tm.ids_model, ids.astype(np.float32), repeats=PASS_REPEATS)["s_per_image"]
    gradient_s = measure_gradient_pass(tm, ids)
    profile = "full" if args.profile == "auto" else args.profile
    size = modality_for(card).passes_size(card)
    print(f"[text] forward pass {forward_s * 1e3:.3f} ms/doc, forward+backward {gradient_s * 1e3:.3f} ms/doc "
          f"(batch {FORWARD_BATCH}); {len(reviews)} documents; parameter profile {profile}", flush=True)
    results = []
    for spec, overrides, params in text_parameters(args):
        started = time.perf_counter()
        passes = spec.passes(params, size)
        pass_s = gradient_s if spec.backward else forward_s
        row = {"method": spec.name, "family": spec.family, "documents": len(reviews), "passes": passes,
               "params": params, "profile": profile, "pass_s": pass_s, "floor_s": passes * pass_s, "error": None}
        try:
            measured = measure_text_in_process(spec, card, model, tm, reviews, ids, classes, params,
                                               harness.session_batch_size(spec.family), args.repeats)
            row["raw_s"], row["ours_s"] = measured["raw_s"] / len(reviews), measured["ours_s"] / len(reviews)
            row["model_rows_per_document"] = ratio(measured["model_rows"], len(reviews))
        except Exception as exc:  # report and go on
            row["raw_s"] = row["ours_s"] = None
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        handler = measure_text_handler(harness, spec, overrides, reviews, args.repeats)
        row["handler_s"] = handler["handler_s"] / len(reviews)
        row["in_handler_explain_s"] = ratio(handler["explain_s"], len(reviews))
        row["handler_timings"] = handler["timings"]
        row["error"] = row["error"] or handler["error"]
        row["ours_over_raw"] = ratio(row["ours_s"], row["raw_s"])
        row["handler_over_ours"] = ratio(row["handler_s"], row["ours_s"])
        row["handler_over_floor"] = ratio(row["handler_s"], row["floor_s"])
        results.append(row)
        status = f"  FAILED {row['error']}" if row["error"] else ""
        print(f"[text] {spec.name}: {time.perf_counter() - started:.1f} s{status}", flush=True)
    return results

"""Text: Keras text classifiers (token ids with a vocabulary file, or strings through TextVectorization).

An upload is a ``.txt`` (one document), ``.jsonl`` or ``.csv`` file of documents
(:mod:`explain_core.texts`), tokenized as the model is (:mod:`explain_core.tokenizers`). The
documents are predicted in one batch; each requested method explains each document for its
explained classes (:mod:`explain_core.text_methods`) and writes, per document and class, the
token attributions as JSON, a highlighted HTML snippet and a PNG, plus one values CSV per method
for the file (:mod:`explain_core.text_report`). See docs/text.md.
"""

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Literal

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field, field_validator

from explain_core.approximation import APPROXIMATION, WARNINGS, Approximation, ExplanationWarning
from explain_core.errors import TextTooLargeError, UnsupportedModelError
from explain_core.explain_condition import skipped_methods
from explain_core.manifest_parts import (
    BASE_VALUE,
    LOADED_FROM,
    OUTPUT_KIND,
    SCORE,
    ClassScore,
    InputLocation,
    ManifestPart,
    ModelIdentity,
)
from explain_core.modalities.base import (
    Explained,
    Modality,
    check_finite,
    check_time_budget,
    method_entry,
    method_error,
    method_seconds,
)
from explain_core.registry import GRADIENT
from explain_core.tokenizers import check_split_pattern

#: Documents timed together to measure a batched model pass.
TIMING_BATCH = 16

metrics = Metrics()


# ---------------------------------------------------------------------- the card fields of a text model
class TextSettings(BaseModel):
    """How a text model reads text (the card's ``text``; docs/text.md#model-cards)."""

    model_config = ConfigDict(extra="forbid")

    #: A model that takes token ids: its vocabulary beside it (UTF-8, one token per line, the first is id 0).
    #: A model that takes strings tokenizes with its TextVectorization layer: no file, its settings are the layer's.
    vocabulary_file: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\.txt$")
    #: Tokens the model reads (its input length); longer documents are cut (their tail, with truncation "post").
    max_length: int = Field(ge=1, le=4096)
    lowercase: bool = True
    #: Remove the characters Keras' TextVectorization strips (ASCII punctuation) from each token.
    strip_punctuation: bool = True
    #: Regular expression between tokens: \s+ or one character class followed by + (nothing that backtracks).
    #: The settings from lowercase to truncation are for a model that takes ids: a model that takes strings
    #: reads them from its TextVectorization layer, and a card that sets them is refused when the model loads.
    split_pattern: str = Field(default=r"\s+", min_length=1, max_length=200)
    oov_token: str = "[UNK]"
    padding_token: str = ""
    padding: Literal["post", "pre"] = "post"
    truncation: Literal["post", "pre"] = "post"
    #: The Embedding layer gradient methods explain (its output); default: the model's only one.
    embedding_layer: str | None = None

    @field_validator("split_pattern")
    @classmethod
    def _safe_split_pattern(cls, value: str) -> str:
        return check_split_pattern(value)


class TextCardFields(BaseModel):
    """The model card's fields for text models (explain_core.model_card.ModelCard has them all)."""

    #: Text models: how the model reads text.
    text: TextSettings | None = None


# ---------------------------------------------------------------------- the manifest's parts of a text file
class TextInput(InputLocation):
    """A text input (.txt, .jsonl or .csv): where it was read from and its documents."""

    format: Literal["txt", "jsonl", "csv"] = Field(description="txt, jsonl or csv (from the file's extension)")
    documents: int = Field(description="Documents explained (1 for .txt)")
    tokens: int = Field(description="Tokens in all documents")
    truncated_documents: int = Field(description="Documents longer than the model's max_length (their tail is cut)")


class TextModelPart(ModelIdentity):
    """The text model that explained the input."""

    modality: Literal["text"] = Field(description="text")
    tokenizer: dict = Field(description="How the text was tokenized: what the model takes (ids or strings), "
                                        "vocabulary size, max_length, normalisation, padding and truncation")
    loaded_from: Annotated[str, LOADED_FROM]


class DocumentPrediction(ManifestPart):
    """One document's prediction."""

    document: int = Field(description="0-based index of the document in the file")
    line: int = Field(description="1-based line of the file where the document starts")
    class_index: int = Field(description="Index of the most probable class")
    class_name: str = Field(description="Name of the most probable class")
    score: float = Field(description="Its probability")
    tokens: int = Field(description="Tokens in the document")
    truncated_tokens: int = Field(description="Tokens past the model's max_length (never seen by the model)")


class TextPredictions(ManifestPart):
    """A text file's predictions: per document, and how many documents each class has."""

    documents: list[DocumentPrediction] = Field(description="Per document, in file order")
    documents_per_class: dict[str, int] = Field(description="Class name -> documents whose most probable class it is")


class TopToken(ManifestPart):
    """One of the most attributed tokens (or sentences) of a document."""

    text: str = Field(description="The token as written in the document")
    start: int = Field(description="Character offset of its start in the document")
    end: int = Field(description="Character offset of its end (exclusive)")
    value: float = Field(description="Its attribution")


class TextOutput(ClassScore):
    """One explained class of one method on one document: result-bucket keys of its files."""

    document: int = Field(description="0-based index of the document in the file")
    line: int = Field(description="1-based line of the file where the document starts")
    score: Annotated[float, SCORE]
    unit: Literal["word", "sentence"] = Field(description="What each value covers: a word, or a sentence")
    tokens: str = Field(description="Key of the attributions JSON: per token (or sentence) its text, character "
                                    "offsets and value")
    html: str = Field(description="Key of the HTML snippet: the document with each token highlighted by its value")
    image: str = Field(description="Key of the same highlighted document as a PNG")
    values: str = Field(description="Key of the method's values CSV: every document and token of the file")
    top_tokens: list[TopToken] = Field(description="The 5 tokens with the largest |value| (the JSON file has them "
                                                   "all)")
    sum_of_values: float = Field(description="Sum of the values over the tokens the model saw")
    padding_value: float | None = Field(default=None, description="Gradient methods: attribution that fell on "
                                                                   "padding positions")
    base_value: Annotated[float | None, BASE_VALUE] = None
    output_kind: Annotated[str | None, OUTPUT_KIND] = None
    approximation: Annotated[Approximation | None, APPROXIMATION] = None
    warnings: Annotated[list[ExplanationWarning] | None, WARNINGS] = None

    def with_links(self, sign) -> dict:
        """The API's view (explain_core.api_models.MethodOutput): file keys as ``sign(key)`` URLs."""
        return {"class_index": self.class_index, "class_name": self.class_name, "score": self.score,
                "document": self.document, "line": self.line, "unit": self.unit,
                "tokens_url": sign(self.tokens), "html_url": sign(self.html), "image_url": sign(self.image),
                "values_url": sign(self.values), "top_tokens": self.top_tokens, "sum_of_values": self.sum_of_values,
                "padding_value": self.padding_value, "base_value": self.base_value, "output_kind": self.output_kind,
                "approximation": self.approximation, "warnings": self.warnings}


# ---------------------------------------------------------------------- a decoded upload
@dataclass
class TextContent:
    """A decoded text upload: its documents and each one as the model sees it."""

    file: object  # explain_core.texts.TextFile
    encoded: list  # explain_core.tokenizers.Encoded per document

    @property
    def documents(self) -> list:
        return self.file.documents

    @cached_property
    def ids(self):
        """(documents, max_length) token ids."""
        import numpy as np

        return np.stack([encoded.ids for encoded in self.encoded])

    def description(self) -> dict:
        return {"format": self.file.format, "documents": len(self.encoded),
                "tokens": sum(len(e.tokens) for e in self.encoded),
                "truncated_documents": sum(e.truncated > 0 for e in self.encoded)}


# ---------------------------------------------------------------------- the plug-in
class TextModality(Modality):
    name = "text"
    frameworks = ("keras",)
    card_fields = TextCardFields
    input_type = TextInput
    model_type = TextModelPart
    predictions_type = TextPredictions
    output_type = TextOutput
    attribution_dtype = "float64"
    uses_background = False
    explains_in_batches = False
    default_background_description = "none: hidden words are replaced by the padding or out-of-vocabulary token"

    def check_card(self, card) -> None:
        if card.text is None:
            raise ValueError('a text model needs "text" settings (at least max_length; docs/text.md)')

    def passes_size(self, card) -> tuple[int, int]:
        return (1, card.text.max_length)

    def model_input_shape(self, card, handler, model) -> tuple:
        return tuple(model.inputs[0].shape[1:])  # ids or strings: checked with the tokenizer (text_model)

    def companion_files(self, card) -> tuple[str, ...]:
        return (card.text.vocabulary_file,) if card.text.vocabulary_file else ()

    def prepare_model(self, loaded, files: dict[str, bytes]):
        from explain_core.text_model import text_model

        return text_model(loaded.model, loaded.card, files)

    def build_explainer(self, spec, model, card, params: dict, batch_size: int, background=None):
        """``model`` is the :class:`explain_core.text_model.TextModel`: gradient methods run on its embeddings,
        reduced per token as ``spec.token_reduction`` says."""
        from explain_core.text_methods import EmbeddingAttributions

        classes = len(card.class_names)
        if spec.family == GRADIENT:
            if model.embeddings_model is None:
                raise UnsupportedModelError(f"{spec.name} explains a text model through its Embedding layer, but "
                                            f"{model.no_gradients_reason}", method=spec.name)
            explainer = spec.explainer_class()(model.embeddings_model, batch_size=batch_size, **params)
            return EmbeddingAttributions(explainer, model, batch_size, classes, reduction=spec.token_reduction)
        return spec.explainer_class()(model, batch_size, classes, **params)

    def describe_model(self, loaded) -> dict:
        return {"tokenizer": loaded.companion.describe()}

    def size_limit(self, settings):
        return settings.max_text_bytes, TextTooLargeError

    def decode(self, data, filename, loaded, settings):
        from explain_core.texts import encode_documents, parse_texts

        file = parse_texts(data, filename, max_bytes=settings.max_text_bytes, max_documents=settings.max_documents)
        return TextContent(file, encode_documents(file.documents, loaded.companion.tokenizer,
                                                  max_tokens=settings.max_document_tokens))

    def prediction_summary(self, manifest: dict) -> str:
        documents = manifest["predictions"]["documents"]
        if len(documents) == 1:
            return f"{documents[0]['class_name']} ({documents[0]['score']:.2f})"
        counts = manifest["predictions"]["documents_per_class"]
        return f"{len(documents)} documents: " + ", ".join(f"{n} {name}" for name, n in counts.items() if n)

    # ------------------------------------------------------------------ explaining
    def estimate_seconds(self, session, upload, loaded) -> float:
        ids = upload.content.ids
        pass_seconds = _pass_seconds(session, loaded, ids)
        classes = 1 if upload.options.target is not None else upload.options.top_k
        return sum(method_seconds(spec, params, len(ids) * classes, pass_seconds, loaded.card)
                   for spec, params in upload.options.methods)

    def explain(self, session, uploads, loaded, context) -> list[Explained]:
        return [self._explain_file(session, upload, loaded, context) for upload in uploads]

    def _explain_file(self, session, upload, loaded, context) -> Explained:
        """Every requested method on every document of one file."""
        import numpy as np

        from explain_core.attribution import probabilities, raw_outputs

        card, content = loaded.card, upload.content
        text_model = loaded.companion
        started = time.perf_counter()
        outputs = raw_outputs(text_model.ids_model, content.ids.astype(np.float32), card, session.batch_size)
        predict_seconds = time.perf_counter() - started
        for document, row in zip(content.documents, outputs, strict=True):
            check_finite(row, f"the model's outputs for line {document.line} of {upload.key}", key=upload.key,
                         line=document.line)
        scores = probabilities(outputs, card)
        # Explain only what is asked: each document is a record, explained when its prediction meets the condition;
        # the others keep their prediction and the reason, and cost no method run.
        verdicts = upload.options.verdicts(scores)
        condition = (upload.options.condition.records_outcome(verdicts, [d.line for d in content.documents],
                                                              documents=True) if upload.options.condition else None)
        targets = [upload.options.classes_to_explain(row) if verdict.explain else []
                   for row, verdict in zip(scores, verdicts, strict=True)]
        rows = sum(len(t) for t in targets)
        explained_documents = sum(verdict.explain for verdict in verdicts)
        pass_seconds = _pass_seconds(session, loaded, content.ids) if rows else 0.0

        objects, methods = [], []
        for spec, params in upload.options.methods if rows else ():
            entry = method_entry(spec, params, card)
            try:
                check_time_budget(spec, params, rows, pass_seconds, card, context)
                explainer = session.explainers.get(spec, text_model, card, params, session.batch_size)
                method_started = time.perf_counter()
                explanations = []
                for index, (document, encoded) in enumerate(zip(content.documents, content.encoded, strict=True)):
                    if not targets[index]:
                        continue  # skipped by the condition
                    found = explainer.explain_document(encoded, document.text, targets[index])
                    explanations += _document_outputs(spec, params, index, document, encoded, found, targets[index],
                                                      scores[index], outputs[index], text_model, card,
                                                      session.batch_size)
                seconds = time.perf_counter() - method_started
                files, outputs_entries = _files(session, upload, spec, explanations, card)
                objects += files
                entry.outputs.extend(outputs_entries)
                entry.seconds = round(seconds, 4)
                entry.seconds_per_image = round(seconds / max(1, explained_documents), 4)
                metrics.add_metric(name=f"{spec.name}Seconds", unit=MetricUnit.Seconds, value=seconds)
            except Exception as exc:  # a method failing on this model must not sink the others
                entry.status = "failed"
                entry.error = method_error(exc, spec.name, card)
                entry.outputs = []
            methods.append(entry)

        if not rows:  # no document met the condition: every method skipped, no output
            methods = skipped_methods(upload.options, card)
        predicted = np.argmax(scores, axis=1)
        counts = np.bincount(predicted, minlength=len(card.class_names))
        explained = sorted({c for t in targets for c in t})
        return Explained(
            objects=objects, methods=methods, input_description=content.description(),
            predictions=TextPredictions(
                documents=[DocumentPrediction(document=i, line=d.line, class_index=int(predicted[i]),
                                              class_name=card.class_name(int(predicted[i])),
                                              score=float(scores[i, predicted[i]]), tokens=len(e.tokens),
                                              truncated_tokens=e.truncated)
                           for i, (d, e) in enumerate(zip(content.documents, content.encoded, strict=True))],
                documents_per_class={card.class_name(i): int(n) for i, n in enumerate(counts)}),
            explained_classes=[ClassScore(class_index=c, class_name=card.class_name(c)) for c in explained],
            timings={"predict_s": round(predict_seconds, 4), "documents": len(content.documents)},
            condition=condition,
        )


def _pass_seconds(session, loaded, ids) -> float:
    """Warm model time per document (batched), after one call that may trace."""
    import numpy as np

    from explain_core.attribution import forward_seconds_per_image, raw_outputs

    batch = np.repeat(ids[:1], min(session.batch_size, TIMING_BATCH), axis=0).astype(np.float32)
    model = loaded.companion.ids_model
    raw_outputs(model, batch, loaded.card, session.batch_size)
    return forward_seconds_per_image(model, batch, loaded.card, session.batch_size)


def _document_outputs(spec, params, index, document, encoded, found, classes, scores, outputs, text_model, card,
                      batch_size) -> list:
    """One document's :class:`explain_core.text_report.DocumentExplanation` per class, with its
    approximation check."""
    from explain_core.approximation import text_check
    from explain_core.shap_methods import output_kind
    from explain_core.text_report import DocumentExplanation

    explained = []
    for row, cls in enumerate(classes):
        name = card.class_name(cls)
        values = found.values[row]
        # The tokens the model saw must have a finite value (NaN is kept only for the tokens cut by max_length,
        # which the report shows as unseen): a NaN there is the model's output, e.g. 0/0 with every word hidden.
        check_finite(values[encoded.seen] if found.unit == "word" else values,
                     f"{spec.name}'s attributions for class {name}", method=spec.name, class_name=name)
        explanation = DocumentExplanation(
            method=spec.name, class_index=int(cls), class_name=name, score=float(scores[cls]), document=index,
            line=document.line, text=document.text, tokens=found.units, values=values, unit=found.unit,
            output_kind=output_kind(card),
            base_value=None if found.base_values is None else float(found.base_values[row]),
            padding_value=None if found.padding is None else float(found.padding[row]))
        approximation, warnings = text_check(spec, params, found, row, int(cls), float(outputs[cls]), encoded,
                                             text_model, card, batch_size)
        explained.append((explanation, approximation, warnings))
    return explained


def _files(session, upload, spec, explanations, card) -> tuple[list, list]:
    """Per document and class: tokens JSON, HTML and PNG; one values CSV for the method; manifest entries."""
    import numpy as np

    from explain_core.keys import class_label
    from explain_core.text_report import (
        html_snippet,
        render_png,
        tokens_json,
        top_token_indexes,
        values_csv,
    )

    values_key = session.output_key(upload, spec.name, "values", "csv")
    files = [(values_key, values_csv([e for e, _, _ in explanations]), "text/csv")]
    entries = []
    for explanation, approximation, warnings in explanations:
        label = f"{explanation.document:03d}-{class_label(explanation.class_index, card.class_names)}"
        keys = {ext: session.output_key(upload, spec.name, label, ext) for ext in ("tokens.json", "html", "png")}
        files += [(keys["tokens.json"], tokens_json(explanation), "application/json"),
                  (keys["html"], html_snippet(explanation), "text/html; charset=utf-8"),
                  (keys["png"], render_png(explanation), "image/png")]
        text = explanation.text
        check = {"approximation": approximation, "warnings": warnings} if spec.approximation else {}
        entries.append(TextOutput(
            class_index=explanation.class_index, class_name=explanation.class_name, score=explanation.score,
            document=explanation.document, line=explanation.line, unit=explanation.unit, tokens=keys["tokens.json"],
            html=keys["html"], image=keys["png"], values=values_key,
            top_tokens=[TopToken(text=text[t.start:t.end], start=t.start, end=t.end,
                                 value=float(explanation.values[i]))
                        for i, t in ((i, explanation.tokens[i]) for i in top_token_indexes(explanation))],
            sum_of_values=float(np.nansum(explanation.values)),
            **({"padding_value": explanation.padding_value} if explanation.padding_value is not None else {}),
            **({"base_value": explanation.base_value, "output_kind": explanation.output_kind}
               if explanation.base_value is not None else {}),
            **check,
        ))
    return files, entries

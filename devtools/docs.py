"""The documentation's generated parts, and the shell blocks that the tests run.

Method tables: ``explain_core.registry`` is the one place a method is declared; the tables of
README.md and docs/methods.md that list methods are rendered from it between marker comments
(``<!-- generated:NAME:begin -->`` ... ``<!-- generated:NAME:end -->``). ``python -m devtools.docs``
(``make docs``) rewrites them; ``--check`` exits 1 when one is stale (tests/unit/test_docs.py runs
the same comparison).

Shell blocks: every fenced ``bash``/``sh``/``console`` block of README.md and docs/*.md carries,
on the line before it, the tier whose tests execute it::

    <!-- doc-test: unit|functional|e2e [SETUP] -->   run by that test tier (SETUP: the environment it needs)
    <!-- doc-test: ci -->                            the README's two commands: `.ci/run` runs `make test`
    <!-- deploy-only -->                             needs a real AWS account (sam deploy, aws against AWS)

A ``text`` block marked ``<!-- doc-output -->`` right after a shell block is that block's exact
output, compared by the test that runs it. ``--sam-env`` rewrites events/samples/env.json, the
``sam local --env-vars`` file of the walkthrough in docs/containers.md (it starts the emulator).
"""

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
METHODS_PAGE = DOCS / "methods.md"
METRICS_PAGE = DOCS / "metrics.md"
#: ``sam local invoke|start-api --env-vars`` for every function, against the emulator container ``moto``.
SAM_ENV_FILE = REPO / "events" / "samples" / "env.json"
#: Where the walkthrough's emulator container is reached: by name from the functions, on a port from the host.
SAM_ENV_ENDPOINTS = {"AWS_ENDPOINT_URL": "http://moto:5000", "PRESIGN_ENDPOINT_URL": "http://127.0.0.1:5055"}

#: One line per family: what its methods do (the registry declares the methods, not the families' prose).
XPLIQUE, SHAP = "[Xplique](https://github.com/deel-ai/xplique)", "[SHAP](https://github.com/shap/shap)"
FAMILY_SUMMARY = {
    "gradient": f"white-box: gradients of the explained class score with respect to the input ({XPLIQUE})",
    "perturbation": f"black-box: the model is only evaluated on perturbed copies of the input ({XPLIQUE})",
    "shap": f"Shapley values ({SHAP}): an input's attributions sum to its output minus a base value",
}
MODALITY_NAMES = {"image": "images", "tabular": "tables", "text": "text"}
FRAMEWORK_NAMES = {"keras": "Keras", "xgboost": "XGBoost"}
#: The input size at which the reference shows each method's cost in model passes.
COST_SIZE = (224, 224)
#: Text methods' costs are per document at this max_length (the model's input length, in tokens).
TEXT_COST_LENGTH = 64

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console", "zsh"})
DEPLOY_ONLY = "deploy-only"
MARKER = re.compile(r"^<!--\s*(?:doc-test:\s*(?P<tier>[a-z0-9-]+)(?:\s+(?P<setup>[a-z0-9-]+))?"
                    r"|(?P<deploy>deploy-only))\s*-->\s*$")
OUTPUT_MARKER = "<!-- doc-output -->"
#: The environments the tiers' tests provide, by tier: a block's SETUP must be one of its tier's.
SETUPS = {
    "unit": {None},  # bash from the repository root (tests/unit/test_docs.py)
    "ci": {None},  # the README's two commands (.ci/run runs `make test`)
    "functional": {"demo-upload"},  # the emulator as `make demo` runs it (tests/functional/test_docs_commands.py)
    "e2e": {"sam-local-invoke", "local-api"},  # tests/e2e/test_docs_commands.py
}
FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<info>[^`\s]*)")


# ---------------------------------------------------------------------------------------------- tables
def _registry():
    from explain_core import registry

    return registry


def _number(value) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return str(int(value))
    return str(value)


def _bounds(spec: dict) -> str:
    """``[2..512]``, ``[8..1024, power of 2]``, ``inpainting, blurring, amplitude`` or ``-``."""
    if "choices" in spec:
        return ", ".join(str(choice) for choice in spec["choices"])
    parts = []
    if "minimum" in spec or "maximum" in spec:
        parts.append(f"{_number(spec.get('minimum', '-inf'))}..{_number(spec.get('maximum', 'inf'))}")
    if spec.get("power_of_two"):
        parts.append("power of 2")
    return f"[{', '.join(parts)}]" if parts else "-"


def _defaults(described: dict) -> str:
    """``steps=50, baseline_value=0.0`` or ``-``."""
    return ", ".join(f"{name}={_number(p['default'])}" for name, p in described["parameters"].items()) or "-"


def _models(described: dict) -> str:
    """``Keras images``, ``Keras images and tables``, ``XGBoost tables``."""
    frameworks = " / ".join(FRAMEWORK_NAMES.get(f, f) for f in described["frameworks"])
    modalities = " and ".join(MODALITY_NAMES.get(m, m) for m in described["modalities"])
    return f"{frameworks} {modalities}"


def _passes(spec) -> str:
    """Model passes per input at the defaults (the registry's cost), or why there is no figure."""
    text_only = tuple(spec.modalities) == ("text",)
    try:
        count = spec.passes(spec.defaults, (1, TEXT_COST_LENGTH) if text_only else COST_SIZE)
    except Exception as exc:  # a cost that depends on the input, refused at this size
        return f"- ({type(exc).__name__})"
    text = f"{count:,}" + (f" per document of max_length {TEXT_COST_LENGTH}" if text_only else "")
    if getattr(spec, "passes_per_background_row", False):
        text += " × background rows"
    if getattr(spec, "backward", False):
        text += " (forward + backward)"
    return text


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def families_table() -> str:
    """README: one row per family: what it does, the models it explains, its methods."""
    registry = _registry()
    rows = ["| family | what it computes | models | methods |", "| --- | --- | --- | --- |"]
    for family in registry.FAMILIES:
        described = [spec.describe() for spec in registry.methods_of(family)]
        models = sorted({(f, m) for d in described for f in d["frameworks"] for m in d["modalities"]},
                        key=lambda fm: (fm[1] != "image", fm))
        model_text = ", ".join(f"{FRAMEWORK_NAMES.get(f, f)} {MODALITY_NAMES.get(m, m)}" for f, m in models)
        modalities = list(dict.fromkeys(m for d in described for m in d["modalities"]))
        groups = {m: [d for d in described if m in d["modalities"]] for m in modalities}

        def names(group: list[dict]) -> str:
            """Method names, each with its frameworks when the group's methods differ in them."""
            mixed = len({tuple(d["frameworks"]) for d in group}) > 1
            return ", ".join(d["name"] + (f" ({', '.join(FRAMEWORK_NAMES.get(f, f) for f in d['frameworks'])})"
                                          if mixed else "") for d in group)

        methods = (names(described) if len(modalities) == 1 else
                   "; ".join(f"{MODALITY_NAMES.get(m, m)}: {names(group)}" for m, group in groups.items()))
        rows.append(f"| `{family}` | {_cell(FAMILY_SUMMARY[family])} | {model_text} | {methods} |")
    return "\n".join(rows)


def methods_table() -> str:
    """README: every method in one line: family, models, what it computes, parameters with defaults."""
    registry = _registry()
    rows = ["| method | family | models | what it computes | parameters (defaults) |",
            "| --- | --- | --- | --- | --- |"]
    for spec in registry.METHODS:
        d = spec.describe()
        rows.append(f"| [{d['name']}](docs/methods.md#{d['name'].lower()}) | {d['family']} | {_models(d)} "
                    f"| {_cell(d['description'])} | {_cell(_defaults(d))} |")
    return "\n".join(rows)


def methods_reference() -> str:
    """docs/methods.md: every method with its parameters, defaults, bounds, cost and paper."""
    registry = _registry()
    limit = getattr(registry, "MAX_PASSES_PER_IMAGE", None)
    out = [
        f"Model passes are the registry's cost at the defaults on a {COST_SIZE[0]}×{COST_SIZE[1]} image"
        + (f"; a request whose parameters need more than {limit:,} passes per input is refused." if limit else "."),
        "",
        "| method | family | models | passes at the defaults | parameters (defaults) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in registry.METHODS:
        d = spec.describe()
        out.append(f"| [{d['name']}](#{d['name'].lower()}) | {d['family']} | {_models(d)} | {_passes(spec)} "
                   f"| {_cell(_defaults(d))} |")
    for family in registry.FAMILIES:
        summary = FAMILY_SUMMARY[family]
        out += ["", f"### The `{family}` family", "", summary[:1].upper() + summary[1:] + "."]
        for spec in registry.methods_of(family):
            d = spec.describe()
            out += ["", f"#### {d['name']}", "", f"{d['description'][:1].upper()}{d['description'][1:]}.", "",
                    f"- models: {_models(d)}",
                    *(["- the layer it reads: the model card's `cam_layer`"] if getattr(spec, "uses_cam_layer", False)
                      else []),
                    *[f"- refuses {MODALITY_NAMES.get(modality, modality)} models (`unsupported_model`): {reason}"
                      for modality, reason in getattr(spec, "refuses", ())],
                    *(["- refuses a SavedModel from a SageMaker `model.tar.gz` (`unsupported_model`): it reads or "
                       "changes layers, which a SavedModel hides; a `.keras` file in the archive works "
                       "([docs/models.md](models.md#sagemaker-training-artifacts-modeltargz))"]
                      if getattr(spec, "reads_layers", False) else []),
                    f"- model passes per input at the defaults: {_passes(spec)}",
                    f"- paper: {d['reference']}", ""]
            out += _parameters_table(d)
    return "\n".join(out)


def _parameters_table(described: dict) -> list[str]:
    """A method's or a metric's parameters: type, default, bounds, meaning."""
    if not described["parameters"]:
        return ["No parameters."]
    rows = ["| parameter | type | default | bounds | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, p in described["parameters"].items():
        rows.append(f"| `{name}` | {p['type']} | {_cell(_number(p['default']))} | {_cell(_bounds(p))} "
                    f"| {_cell(p.get('doc', ''))} |")
    return rows


def _range(described: dict) -> str:
    low, high = described["range"]
    return f"{_number('-inf' if low is None else low)} to {_number('inf' if high is None else high)}"


def _metric_passes(spec) -> str:
    """Model passes per scored map at the defaults: a number, or a multiple of the method's passes."""
    if spec.reruns_method:
        return f"{spec.passes(spec.defaults, 1)} × the method's passes"
    return str(spec.passes(spec.defaults, 0))


def metrics_reference() -> str:
    """docs/metrics.md: every quality metric with what it measures, which way is better, cost and paper."""
    registry = _registry()
    out = [
        "Passes are model passes per scored map (one image, one class, one method) at the defaults; a metric "
        f"that would need more than {registry.MAX_PASSES_PER_IMAGE:,} on one map is refused for that method.",
        "",
        "| metric | kind | better | range | passes per map | parameters (defaults) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for spec in registry.METRICS:
        d = spec.describe()
        out.append(f"| [{d['name']}](#{d['name'].lower()}) | {d['kind']} | "
                   f"{'higher' if d['higher_is_better'] else 'lower'} | {_range(d)} | {_metric_passes(spec)} "
                   f"| {_cell(_defaults(d))} |")
    for spec in registry.METRICS:
        d = spec.describe()
        out += ["", f"### {d['name']}", "", f"{d['description'][:1].upper()}{d['description'][1:]}.", "",
                f"- kind: {d['kind']}; scores explanations of "
                f"{', '.join(MODALITY_NAMES.get(m, m) for m in d['modalities'])}",
                f"- good: {d['good']}",
                f"- range: {_range(d)}",
                f"- model passes per map at the defaults: {_metric_passes(spec)}",
                f"- Xplique class: `{spec.metric}`",
                f"- paper: {d['reference']}", ""]
        out += _parameters_table(d)
    return "\n".join(out)


def _schema_rows(schema: dict, definitions: dict, path: str = "") -> list[str]:
    """One row per option of a spec model's JSON schema (nested objects flattened as ``a.b``)."""
    rows = []
    required = set(schema.get("required", []))
    for name, field in schema.get("properties", {}).items():
        options = [o for o in field.get("anyOf", [field]) if o.get("type") != "null"]
        target = options[0] if len(options) == 1 else {}
        if "$ref" in target:
            nested = definitions[target["$ref"].rsplit("/", 1)[-1]]
            if nested.get("type") == "object" and nested.get("properties"):
                rows += _schema_rows(nested, definitions, f"{path}{name}.")
                continue
        bounds = [f"{label} {field[key]}" for key, label in (("minimum", "≥"), ("exclusiveMinimum", ">"),
                                                                 ("maximum", "≤"), ("minLength", "length ≥"),
                                                                 ("maxLength", "length ≤"), ("minItems", "items ≥"),
                                                                 ("maxItems", "items ≤")) if key in field]
        for option in options:
            bounds += [f"{label} {option[key]}" for key, label in (("minimum", "≥"), ("maximum", "≤"),
                                                                   ("minItems", "items ≥"), ("maxItems", "items ≤"))
                       if key in option]
        if "enum" in field or any("enum" in o for o in options):
            values = field.get("enum") or next(o["enum"] for o in options if "enum" in o)
            bounds.append(" \\| ".join(f"`{v}`" for v in values))
        default = "required" if name in required else (
            f"`{json.dumps(field['default'])}`" if "default" in field and field["default"] is not None else "-")
        rows.append(f"| `{path}{name}` | {default} | {_cell(', '.join(dict.fromkeys(bounds))) or '-'} | "
                    f"{_cell(field.get('description', ''))} |")
    return rows


def insights_reference() -> str:
    """Per insight kind (explain_core.insights.kinds): what it computes, its paper and every option."""
    from explain_core.insights.kinds import KINDS

    out = ["| kind | what it gives | paper |", "| --- | --- | --- |"]
    out += [f"| [`{kind.name}`](#{kind.name.replace('_', '-')}) | {_cell(kind.title)} | {_cell(kind.reference)} |"
            for kind in KINDS]
    for kind in KINDS:
        schema = kind.Spec.model_json_schema(by_alias=True)
        doc = " ".join((type(kind).__doc__ or "").strip().split("\n\n")[0].split())
        out += ["", f"### {kind.name.replace('_', '-')}", "", doc, "",
                "| option | default | bounds | meaning |", "| --- | --- | --- | --- |"]
        out += _schema_rows(schema, schema.get("$defs", {}))
    return "\n".join(out)


INSIGHTS_PAGE = DOCS / "insights.md"

#: File -> generated section name -> renderer.
GENERATED = {
    README: {"families": families_table, "methods": methods_table},
    METHODS_PAGE: {"reference": methods_reference},
    METRICS_PAGE: {"reference": metrics_reference},
    INSIGHTS_PAGE: {"kinds": insights_reference},
}


def _section(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated:{name}:begin[^>]*-->\n)(.*?)(<!-- generated:{name}:end -->)", re.S)


def render(path: Path, text: str | None = None) -> str:
    """The file's text with every generated section rendered from the registry."""
    text = path.read_text() if text is None else text
    for name, renderer in GENERATED[path].items():
        pattern = _section(name)
        if not pattern.search(text):
            raise ValueError(f"{path.relative_to(REPO)} has no <!-- generated:{name}:begin --> section")
        body = renderer()
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(3), text, count=1)
    return text


def stale() -> list[Path]:
    """The files whose generated sections differ from what the registry gives."""
    return [path for path in GENERATED if path.read_text() != render(path)]


# ---------------------------------------------------------------------------------------------- shell blocks
@dataclass
class Block:
    """A fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: str | None  # the comment on the line before the fence, if it is a doc-test marker
    tier: str | None = None  # unit, functional, e2e, ci, or deploy-only
    setup: str | None = None
    expected_output: str | None = None  # the ``<!-- doc-output -->`` text block right after it

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md")), *sorted((REPO / "layers").glob("README.md"))]


def fenced_blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks, i, previous = [], 0, ""
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        fence, start = match.group("fence"), i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(fence)), len(lines))
        marker = MARKER.match(previous)
        block = Block(path, start + 1, match.group("info").lower(), "\n".join(lines[start + 1:end]) + "\n",
                      previous if (marker or previous == OUTPUT_MARKER) else None)
        if marker:
            block.tier = DEPLOY_ONLY if marker.group("deploy") else marker.group("tier")
            block.setup = marker.group("setup")
        if previous == OUTPUT_MARKER and blocks and blocks[-1].is_shell:
            blocks[-1].expected_output = block.code
        blocks.append(block)
        previous, i = "", end + 1
    return blocks


def shell_blocks(paths: Iterable[Path] | None = None) -> list[Block]:
    return [block for path in (paths or doc_files()) for block in fenced_blocks(path) if block.is_shell]


def blocks_of(tier: str, setup: str | None = None) -> list[Block]:
    """The shell blocks a tier runs (with ``setup``: those that need that environment), in document order."""
    return [block for block in shell_blocks() if block.tier == tier and (setup is None or block.setup == setup)]


def run_block(block: Block, env: dict | None = None, *, timeout: float = 600, cwd: Path = REPO,
              check: bool = True) -> subprocess.CompletedProcess:
    """Run a shell block with bash (``set -euo pipefail``) from the repository root, as a user pastes it.

    ``env`` is added to this process's environment; raises with the output when the block fails or
    its output differs from its ``<!-- doc-output -->`` block.
    """
    completed = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block.code], cwd=cwd,
                               env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
    if check and completed.returncode != 0:
        raise AssertionError(f"the shell block at {block.where} failed ({completed.returncode}):\n{block.code}\n"
                             f"--- stdout\n{completed.stdout[-6000:]}\n--- stderr\n{completed.stderr[-6000:]}")
    if check and block.expected_output is not None and completed.stdout != block.expected_output:
        raise AssertionError(f"the shell block at {block.where} printed\n{completed.stdout}\n"
                             f"and its documented output is\n{block.expected_output}")
    return completed


# ---------------------------------------------------------------------------------------------- sam env vars
def sam_env_vars(deployment) -> dict:
    """Every function's variables with local names, against the walkthrough's emulator container."""
    return {function: {**wiring.environment, **SAM_ENV_ENDPOINTS} for function, wiring in deployment.functions.items()}


def write_sam_env() -> None:
    from devtools.local import aws

    server, endpoint = aws.start_emulator()
    try:
        document = sam_env_vars(aws.deploy(endpoint))
    finally:
        server.stop()
    SAM_ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
    SAM_ENV_FILE.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {SAM_ENV_FILE.relative_to(REPO)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if a generated section is stale")
    parser.add_argument("--sam-env", action="store_true", help=f"rewrite {SAM_ENV_FILE.relative_to(REPO)} too")
    args = parser.parse_args(argv)
    if args.check:
        paths = stale()
        for path in paths:
            print(f"{path.relative_to(REPO)} is stale: run `make docs`", file=sys.stderr)
        return 1 if paths else 0
    for path in GENERATED:
        text = render(path)
        if text != path.read_text():
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if args.sam_env:
        write_sam_env()
    return 0


if __name__ == "__main__":
    sys.exit(main())

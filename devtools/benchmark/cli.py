"""The command line (``python -m devtools.benchmark``, ``make bench``): start the emulator, run the
sections asked for, print the report and write the JSON results."""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import devtools.benchmark
from devtools.benchmark.burst import benchmark_burst
from devtools.benchmark.harness import Harness
from devtools.benchmark.insights import KIND_NAMES, benchmark_insights
from devtools.benchmark.methods import benchmark_methods
from devtools.benchmark.partition_profile import benchmark_partition_profile
from devtools.benchmark.plugins import section_modules
from devtools.benchmark.report import tables_of
from devtools.benchmark.shap_vs_xplique import benchmark_shap_vs_xplique
from devtools.benchmark.subjects import REPO, SUBJECTS, Subject, profile_of, profile_overrides
from devtools.benchmark.tabular import benchmark_tabular
from devtools.benchmark.text import benchmark_text, text_parameters
from explain_core.errors import ExplainError
from explain_core.registry import GRADIENT, METHODS, REGISTRY, MethodSpec

DEFAULT_OUTPUT = REPO / "benchmark-results" / "benchmark.json"
BUILT_IN_SECTIONS = ("methods", "burst", "shap-vs-xplique", "tabular", "partition-profile", "text", "insights")
#: The built-in sections, then the plug-in sections (devtools/benchmark/plugins.py).
SECTIONS = BUILT_IN_SECTIONS + tuple(section_modules())


def selected_methods(names: str) -> list[MethodSpec]:
    """argparse type: comma-separated registry method names (any case) or ``all``."""
    if names.strip().lower() == "all":
        return list(METHODS)
    by_lower = {name.lower(): spec for name, spec in REGISTRY.items()}
    specs = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name.lower() not in by_lower:
            raise argparse.ArgumentTypeError(f"unknown method {name!r}; known: {', '.join(REGISTRY)}")
        specs.append(by_lower[name.lower()])
    return specs


def comma_list(choices):
    """argparse type: a comma-separated list whose items must be among ``choices``."""

    def parse(value: str) -> list[str]:
        items = [item.strip() for item in value.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}")
        return items

    return parse


def positive_ints(value: str) -> list[int]:
    """argparse type: comma-separated positive integers."""
    try:
        items = [int(item) for item in value.split(",") if item.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {exc}") from exc
    if not items or min(items) < 1:
        raise argparse.ArgumentTypeError("expected comma-separated positive integers")
    return items


def json_object(value: str) -> dict:
    """argparse type for ``--params``: ``{"<Method>": {"<param>": value}}``, method names normalised."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise argparse.ArgumentTypeError('expected {"<Method>": {"<param>": value}}')
    by_lower = {name.lower(): name for name in REGISTRY}
    unknown = [name for name in parsed if name.lower() not in by_lower]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return {by_lower[name.lower()]: value for name, value in parsed.items()}


def parse_args(argv=None):
    """The command line (see ``--help``)."""
    parser = argparse.ArgumentParser(prog="python -m devtools.benchmark", description=devtools.benchmark.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=comma_list(SUBJECTS), default=list(SUBJECTS),
                        help="models to benchmark (default: demo,mobilenet)")
    parser.add_argument("--methods", type=selected_methods, default=list(METHODS),
                        help="comma-separated registry methods of any family, or 'all' (default); methods a model "
                             "cannot explain (tabular-only SHAP methods on image models) are left out")
    parser.add_argument("--images", type=int, default=2,
                        help="images per batch in the methods and shap-vs-xplique sections (default: 2)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs per raw and handler measurement, the best kept (default: 1)")
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--quick", dest="profile", action="store_const", const="quick",
                         help="reduced parameters (nb_samples, nb_design, steps, occlusion grid) on every model")
    profile.add_argument("--full", dest="profile", action="store_const", const="full",
                         help="registry default parameters on every model (MobileNetV2: far beyond 15 minutes)")
    parser.set_defaults(profile="auto")
    parser.add_argument("--params", type=json_object, default={},
                        help='extra overrides on top of the profile, e.g. \'{"Rise": {"nb_samples": 500}}\'')
    parser.add_argument("--sections", type=comma_list(SECTIONS), default=list(SECTIONS),
                        help=f"what to run (default: {','.join(SECTIONS)})")
    parser.add_argument("--shap-evals", type=positive_ints, default=[100, 300],
                        help="model evaluations per image in shap-vs-xplique (default: 100,300)")
    parser.add_argument("--tabular-rows", type=positive_ints, default=[8, 64],
                        help="rows per CSV upload in the tabular section (default: 8,64)")
    parser.add_argument("--text-documents", type=int, default=16,
                        help="held-out reviews in the text section's .jsonl upload (default: 16)")
    parser.add_argument("--insights-kinds", type=comma_list(KIND_NAMES), default=list(KIND_NAMES),
                        help="insight kinds of the insights section, each on every --models model (default: all)")
    parser.add_argument("--insights-small", action="store_true",
                        help="the insights section at the demo job's small settings (default: its full settings)")
    parser.add_argument("--insights-max-parts", type=int, default=0,
                        help="parts run per insight kind, those with the largest estimates (default 0: all)")
    parser.add_argument("--no-insights-sequence", dest="insights_sequence", action="store_false",
                        help="skip the insights row 'all': every kind in turn in one process, one part each")
    parser.add_argument("--insights-timeout", type=float, default=900.0,
                        help="seconds before an insights subprocess is killed (default: 900, the function's)")
    parser.add_argument("--burst-images", type=int, default=32, help="images in the burst section (default: 32)")
    parser.add_argument("--burst-methods", type=selected_methods, default="GradCAM,IntegratedGradients",
                        help="gradient methods for the burst section (default: GradCAM,IntegratedGradients)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON results (default: {DEFAULT_OUTPUT})")
    for module in section_modules().values():
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    parser.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="the template's LogLevel for the functions (default: WARNING)")
    args = parser.parse_args(argv)
    if min(args.images, args.burst_images, args.repeats, args.text_documents) < 1:
        parser.error("--images, --burst-images, --repeats and --text-documents must be at least 1")
    if args.insights_max_parts < 0 or args.insights_timeout <= 0:
        parser.error("--insights-max-parts must be at least 0 and --insights-timeout positive")
    if any(spec.family != GRADIENT for spec in args.burst_methods):
        parser.error("--burst-methods must be gradient methods (the burst goes through the gradient function)")
    return args


def library_versions() -> dict:
    """Versions of what the timings depend on, for the JSON report: the manifest's, plus the emulator."""
    from importlib import metadata

    from explain_core.session import library_versions as session_versions

    return {**session_versions(), "moto": metadata.version("moto")}


def check_parameters(subjects: dict[str, Subject], args) -> None:
    """Fail before measuring anything if a profile or ``--params`` gives a method a parameter it refuses."""
    plan = [(subjects[key], args.methods) for key in args.models if "methods" in args.sections]
    plan += [(subjects["demo"], args.burst_methods)] if "burst" in args.sections else []
    for subject, specs in plan:
        for spec in (spec for spec in specs if spec.supports(subject.card)):
            try:
                spec.resolve(profile_overrides(spec, profile_of(subject, args), subject.input_size, args.params),
                             subject.input_size)
            except ExplainError as exc:
                raise SystemExit(f"parameters refused for {spec.name} on {subject.key}: {exc}") from exc
    if "text" in args.sections:
        text_parameters(args)
    if "shap-vs-xplique" in args.sections:
        for evaluations in args.shap_evals:
            for name, param in (("KernelShap", "nb_samples"), ("SuperpixelKernelExplainer", "nb_samples"),
                                ("PartitionExplainer", "max_evals")):
                try:
                    REGISTRY[name].resolve({param: evaluations}, subjects["demo"].input_size)
                except ExplainError as exc:
                    raise SystemExit(f"--shap-evals {evaluations} refused: {exc}") from exc


def run_sections(harness: Harness, args, results: dict) -> None:
    """Run the requested sections, adding rows to ``results`` as they are measured."""
    demo_sections = {"burst", "shap-vs-xplique", "partition-profile"} & set(args.sections)
    subjects = {key: SUBJECTS[key]() for key in dict.fromkeys(args.models + ["demo"] * bool(demo_sections))}
    check_parameters(subjects, args)
    if "methods" in args.sections:
        for key in args.models:
            results["forward"][key], rows = benchmark_methods(harness, subjects[key], args.methods, args)
            results["methods"] += rows
    if "burst" in args.sections:
        results["burst"] += benchmark_burst(harness, subjects["demo"], args.burst_methods, args)
    if "shap-vs-xplique" in args.sections:
        results["shap_vs_xplique"] += benchmark_shap_vs_xplique(harness, subjects["demo"], args)
    if "tabular" in args.sections:
        results["tabular"] += benchmark_tabular(harness, args)
    if "partition-profile" in args.sections:
        results["partition_profile"] = benchmark_partition_profile(harness, subjects["demo"], args)
    if "text" in args.sections:
        results["text"] += benchmark_text(harness, args)
    if "insights" in args.sections:
        results["insights"] = benchmark_insights(harness, args)
    for name, module in section_modules().items():
        if name in args.sections:
            results[name] = module.run(harness, args, results)


def main(argv=None) -> None:
    """Start the emulator, run the sections, print the tables and write the JSON, even after a failure."""
    args = parse_args(argv)
    started = time.perf_counter()
    harness = Harness(args.log_level, args.output.with_name("handler-output.log"))
    results = {
        "arguments": {
            "models": args.models, "methods": [s.name for s in args.methods], "images": args.images,
            "repeats": args.repeats, "profile": args.profile, "params": args.params, "sections": args.sections,
            "burst_images": args.burst_images, "burst_methods": [s.name for s in args.burst_methods],
            "shap_evals": args.shap_evals, "tabular_rows": args.tabular_rows, "text_documents": args.text_documents,
            "insights_kinds": args.insights_kinds, "insights_small": args.insights_small,
            "insights_max_parts": args.insights_max_parts, "insights_sequence": args.insights_sequence,
        },
        "environment": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "versions": library_versions(),
            "template_batch_sizes": harness.batch_sizes(),
        },
        "forward": {}, "methods": [], "burst": [], "shap_vs_xplique": [], "tabular": [], "partition_profile": {},
        "text": [], "insights": {},
    }
    try:
        run_sections(harness, args, results)
    finally:  # on failure too: whatever was measured is printed and saved
        harness.close()
        results["elapsed_s"] = time.perf_counter() - started
        print()
        print("\n".join(tables_of(results, args)))
        for name, module in section_modules().items():
            if results.get(name):
                print("\n".join(module.tables(results[name], args)))
        print(f"Total elapsed: {results['elapsed_s']:.1f} s")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2, default=str))
        print(f"Results: {args.output}")

"""The docs: generated method tables up to date, every shell block run by a test tier (or deploy-only),
links and make targets that exist, and the README a front page.

The functional and e2e tiers run their blocks (tests/functional|e2e/test_docs_commands.py).
"""

import re
from pathlib import Path

import pytest

from devtools import docs
from explain_core.registry import FAMILIES, METHODS

REPO = docs.REPO
README_MAX_LINES = 300
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
MAKE_TARGET = re.compile(r"^([A-Za-z][\w-]*)\s*:(?!=)", re.M)
MAKE_COMMAND = re.compile(r"(?:^|`|\$ |;\s*|&&\s*)make ([a-z][\w-]*)", re.M)


def doc_text(path: Path) -> str:
    return path.read_text()


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, in_fence = set(), False
    for line in path.read_text().splitlines():
        if docs.FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (match := HEADING.match(line)):
            found.add(slug(match.group(1)))
    return found


def makefile_targets() -> set[str]:
    return set(MAKE_TARGET.findall((REPO / "Makefile").read_text()))


# ------------------------------------------------------------------------------------ generated tables
def test_generated_method_tables_match_the_registry():
    stale = [str(path.relative_to(REPO)) for path in docs.stale()]
    assert not stale, f"{', '.join(stale)} stale: run `make docs` (python -m devtools.docs)"


def test_generated_tables_name_every_method_and_family():
    readme, reference = doc_text(docs.README), doc_text(docs.METHODS_PAGE)
    for spec in METHODS:
        assert f"[{spec.name}](docs/methods.md#{spec.name.lower()})" in readme
        assert f"\n#### {spec.name}\n" in reference
        for name in spec.describe()["parameters"]:
            assert f"| `{name}` |" in reference, (spec.name, name)
    for family in FAMILIES:
        assert f"| `{family}` |" in readme
        assert f"### The `{family}` family" in reference


def test_a_stale_table_is_found_and_rewritten(tmp_path):
    readme = doc_text(docs.README)
    begin = readme.index("<!-- generated:methods:begin")
    body_start = readme.index("\n", begin) + 1
    stale = readme[:body_start] + "| an old table |\n" + readme[readme.index("<!-- generated:methods:end -->"):]
    assert stale != readme
    assert docs.render(docs.README, stale) == readme


# ------------------------------------------------------------------------------------ shell blocks
def test_every_fenced_block_names_its_language():
    unnamed = [block.where for path in docs.doc_files() for block in docs.fenced_blocks(path) if not block.language]
    assert not unnamed, f"fenced blocks without a language (```text for diagrams and listings): {unnamed}"


def test_every_shell_block_is_run_by_a_test_tier_or_is_deploy_only():
    blocks = docs.shell_blocks()
    assert len(blocks) >= 10
    unmarked = [block.where for block in blocks if block.tier is None]
    assert not unmarked, ("shell blocks without a marker (<!-- doc-test: unit|functional|e2e SETUP --> or "
                          f"<!-- deploy-only -->) on the line before: {unmarked}")
    for block in blocks:
        if block.tier == docs.DEPLOY_ONLY:
            continue
        assert block.tier in docs.SETUPS, f"{block.where}: unknown tier {block.tier!r}"
        assert block.setup in docs.SETUPS[block.tier], (
            f"{block.where}: {block.tier} setup {block.setup!r} is none of {docs.SETUPS[block.tier]}")


def test_deploy_only_blocks_are_the_ones_that_need_aws():
    for block in docs.shell_blocks():
        needs_aws = "sam deploy" in block.code or "cloudformation" in block.code or "aws s3 " in block.code
        if block.tier == docs.DEPLOY_ONLY:
            assert needs_aws, f"{block.where} is deploy-only but needs no AWS account: give it a test tier"
        else:
            assert not needs_aws, f"{block.where} needs a real AWS account: mark it <!-- deploy-only -->"


def test_shell_blocks_use_the_projects_tools():
    """A fresh machine has no `sam` or `jq` on PATH, and a literal <placeholder> is a shell redirection."""
    for block in docs.shell_blocks():
        code = "\n".join(line.split(" #")[0] for line in block.code.splitlines())
        assert not re.search(r"(^|[\s;|&(])sam\s", code, re.M), f"{block.where}: use .venv/bin/sam, not sam"
        assert not re.search(r"(^|[\s;|&(])jq\s", code, re.M), f"{block.where}: parse JSON with python3, not jq"
        unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "", code)
        assert not re.search(r"<[A-Za-z_][\w-]*>", unquoted), f"{block.where}: a <placeholder> outside quotes"
        assert "${API}" not in code, f"{block.where}: write $API/route (API has no trailing slash)"


def test_the_readme_commands_are_what_ci_and_the_main_job_test_run():
    (block,) = [block for block in docs.shell_blocks([docs.README]) if block.tier == "ci"]
    commands = [line.split("#")[0].strip() for line in block.code.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert "make test" in [line.strip() for line in ci], ".ci/run must run the README's test command"
    makefile = (REPO / "Makefile").read_text()
    assert {"demo", "test"} <= makefile_targets()
    demo_recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "-m devtools.demo $(DEMO_ARGS)" in demo_recipe
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "pytest" in test_recipe and "lint" in test_recipe.splitlines()[0]
    # `make demo` is the main job that the functional tier runs (with --once, which DEMO_ARGS passes).
    main_job = (REPO / "tests" / "functional" / "test_main_job.py").read_text()
    assert '"devtools.demo", "--once"' in main_job


@pytest.mark.parametrize("block", docs.blocks_of("unit"), ids=lambda block: block.where)
def test_unit_blocks_run(block):
    docs.run_block(block, timeout=300)


# ------------------------------------------------------------------------------------ links, targets, size
def test_relative_links_and_their_anchors_resolve():
    broken = []
    for path in docs.doc_files():
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.relative_to(REPO)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{path.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_make_targets_named_in_the_docs_exist():
    targets = makefile_targets()
    named = {(path.relative_to(REPO), target) for path in docs.doc_files()
             for target in MAKE_COMMAND.findall(path.read_text())}
    assert {target for _, target in named} >= {"demo", "test", "docs", "images", "local-api"}
    missing = sorted(f"{path}: make {target}" for path, target in named if target not in targets)
    assert not missing, missing


def test_the_readme_is_a_front_page_that_links_every_page():
    readme = doc_text(docs.README)
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert readme.index("make demo") < readme.index("## How it works"), "the two commands come first"
    for page in sorted(docs.DOCS.glob("*.md")):
        assert f"](docs/{page.name})" in readme, f"the README does not link docs/{page.name}"


def test_the_walkthrough_files_exist():
    env = docs.SAM_ENV_FILE.read_text()
    from devtools.local.aws import load_template

    functions = {name for name, resource in load_template()["Resources"].items()
                 if resource["Type"] == "AWS::Serverless::Function"}
    import json

    document = json.loads(env)
    assert set(document) == functions, "events/samples/env.json: run `python -m devtools.docs --sam-env`"
    assert all(variables["AWS_ENDPOINT_URL"] == "http://moto:5000" for variables in document.values())
    image = REPO / "events" / "samples" / "circle.png"
    assert image.read_bytes().startswith(b"\x89PNG") and image.stat().st_size < 96_000
    assert (REPO / "events" / "samples" / "patients.csv").read_text().startswith("mean radius,")
    from devtools import text_demo

    assert (REPO / "events" / "samples" / "reviews.jsonl").read_bytes() == text_demo.sample_files()["reviews.jsonl"]


CODE_SPAN = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"\b((?:explain_core|devtools)(?:\.[A-Za-z_]\w*)+)")
#: What the tools create: not in a clean clone.
GENERATED_DIRS = {".cache", ".aws-sam", ".venv", "local-results", "benchmark-results", "test-artifacts"}
PACKAGE_ROOTS = {"explain_core": REPO / "layers" / "explain_core" / "src", "devtools": REPO}


def _module_file(parts: list[str]) -> Path | None:
    base = PACKAGE_ROOTS[parts[0]] / Path(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def test_files_and_modules_named_in_the_docs_exist():
    """`devtools/local/aws.py`, `explain_core/keys.py`, `devtools.local.events deliver`, a class of a module: a
    file moved or a name changed must take its docs along."""
    top_level = {path.name for path in REPO.iterdir()}
    missing = []
    for doc in docs.doc_files():
        text = doc.read_text()
        spans = CODE_SPAN.findall(text) + [block.code for block in docs.shell_blocks([doc])]
        for span in spans:
            for token in re.findall(r"(?<![\w.*<>/$-])[\w.*<>-]+(?:/[\w.*<>-]+)+/?", span):
                first = token.split("/")[0]
                if "<" in token or first in GENERATED_DIRS:
                    continue  # a placeholder, or what the tools create
                if first == "explain_core":
                    root = PACKAGE_ROOTS["explain_core"]
                elif first in top_level and first != "docs":
                    root = REPO
                else:
                    continue  # an S3 key, a path in a container, ...
                if not list(root.glob(token.rstrip("/"))):
                    missing.append(f"{doc.relative_to(REPO)}: {token}")
            for dotted in DOTTED.findall(span):
                parts = dotted.split(".")
                for end in range(len(parts), 1, -1):
                    module = _module_file(parts[:end])
                    if module is not None:
                        break
                else:
                    missing.append(f"{doc.relative_to(REPO)}: {dotted} (no such module)")
                    continue
                if end < len(parts):  # a name defined in the module
                    name = parts[end]
                    if not re.search(rf"^\s*(?:def|class)\s+{name}\b|^{name}\s*[:=]", module.read_text(), re.M):
                        missing.append(f"{doc.relative_to(REPO)}: {dotted} ({name} is not in {module.name})")
    assert not missing, "\n".join(missing)

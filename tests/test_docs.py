"""The documentation says only what the code does.

README.md and docs/*.md are read as Markdown and checked against the code itself: every
`sejax <subcommand>` and `--flag` they show is accepted by the argparse parser of
`sejax.cli.main`, every config key they name exists in `sejax.configs.default.get_config()`
(docs/configuration.md lists each one once, with its true default), every name their Python
examples import exists, the README's layout lists exactly the modules on disk, mkdocs.yml's
nav is exactly the docs pages, and every relative link and anchor resolves.
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import ml_collections
import pytest
import yaml

from sejax.configs import default
from sejax.configs.loading import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
PAGE_IDS = [str(p.relative_to(ROOT)) for p in PAGES]

FENCE_RE = re.compile(
    r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.M | re.S,
)
SPAN_RE = re.compile(r"`([^`\n]+)`")
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
PYTHON_LANGS = {"python", "py", "pycon"}


# ------------------------------------------------------------------------------------------
# Reading Markdown.


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m["lang"].lower(), m["body"]) for m in FENCE_RE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE_RE.sub("", text)


def spans(text: str) -> list[str]:
    """Inline code spans outside fenced blocks, with Markdown table escapes undone."""
    return [s.replace("\\|", "|") for s in SPAN_RE.findall(prose(text))]


def logical_lines(body: str) -> list[str]:
    """Shell lines with comments removed and backslash continuations joined."""
    lines = [re.sub(r"(^|\s)#.*$", "", line) for line in body.splitlines()]
    return re.sub(r"\\\n", " ", "\n".join(lines)).splitlines()


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------
# (a) Commands and flags.

COMMAND_RE = re.compile(r"(?:^|(?<=[\s/'\"(]))sejax[ \t]+(?P<cmd>[a-z][\w-]*)")
FLAG_RE = re.compile(r"(?<![\w-])--(?P<name>[A-Za-z][\w-]*(?:\.[\w.*-]+)?)")
# Where a shell command ends: && || ; a background &, or a pipe into another program.
SEPARATOR_RE = re.compile(r"&&|\|\||;|(?<=\s)&(?=\s|$)|(?<=\s)\|(?=\s+[^\s-])")


def test_ci_runs_the_readmes_test_command():
    """CI's promise is the README's: what `.ci/run` installs and runs is what the README shows."""
    shown = [line for lang, body in blocks(read(README)) if lang in SHELL_LANGS
             for line in logical_lines(body) if "-m pytest" in line]  # fmt: skip
    assert len(shown) == 1, shown
    ci = [line for line in logical_lines(read(ROOT / ".ci" / "run")) if "-m pytest" in line]
    assert len(ci) == 2  # the default Python, then the newest one on the machine
    args = shown[0].split("-m pytest", 1)[1].split()
    for line in ci:
        assert line.split("-m pytest", 1)[1].split() == args, line
        assert "'.[test]'" in line


@functools.cache
def subcommands() -> dict[str, argparse.ArgumentParser]:
    from sejax.cli.main import build_parser

    parser = build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def takes_config(parser: argparse.ArgumentParser) -> bool:
    """`--config.KEY=VALUE` overrides go to the subcommands that read a config: those with
    a `--config FILE` option (prepare, train, cv)."""
    return "--config" in parser._option_string_actions


def shown_commands(text: str) -> list[tuple[str, str, list[str]]]:
    """(where, subcommand, [--flag ...]) of every sejax command in code: shell blocks, and
    inline spans that start with `sejax `."""
    found = []
    for lang, body in blocks(text):
        if lang not in SHELL_LANGS:
            continue
        for line in logical_lines(body):
            for m in COMMAND_RE.finditer(line):
                rest = SEPARATOR_RE.split(line[m.end() :])[0]
                found.append((line.strip(), m["cmd"], FLAG_RE.findall(rest)))
    for span in spans(text):
        m = COMMAND_RE.match(span.strip())
        if m:  # a synopsis like `sejax predict [--workdir W | --model M] PATH...` is one command
            found.append((span, m["cmd"], FLAG_RE.findall(span[m.end() :])))
    return found


def is_placeholder(key: str) -> bool:
    """`--config.KEY=VALUE`, `config.K`: a name for any key, not a key."""
    return key.split(".")[0].isupper()


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_shown_commands_and_flags_exist(page):
    commands = subcommands()
    problems = []
    for where, cmd, flags in shown_commands(read(page)):
        if cmd not in commands:
            problems.append(f"`sejax {cmd}` is not a subcommand ({sorted(commands)}): {where}")
            continue
        parser = commands[cmd]
        for name in flags:
            if name.startswith("config."):
                if not takes_config(parser):
                    problems.append(f"`sejax {cmd}` takes no --config.KEY overrides: {where}")
            elif f"--{name}" not in parser._option_string_actions:
                problems.append(f"`sejax {cmd}` has no flag --{name}: {where}")
    assert not problems, "\n".join(problems)


def test_every_command_is_shown():
    """The docs show commands at all, and each subcommand somewhere (so (a) checks something)."""
    shown = {cmd for page in PAGES for _, cmd, _ in shown_commands(read(page))}
    assert set(subcommands()) <= shown


def test_cli_page_documents_every_subcommand_and_flag():
    """docs/cli.md has a section per subcommand naming each of its flags."""
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", read(DOCS / "cli.md"), re.M | re.S))
    problems = []
    for cmd, parser in subcommands().items():
        if cmd not in sections:
            problems.append(f"docs/cli.md has no '## {cmd}' section")
            continue
        for action in parser._actions:
            longest = max(action.option_strings, key=len, default=None)
            if longest in (None, "--help"):
                continue
            if not re.search(rf"{re.escape(longest)}(?![\w-])", sections[cmd]):
                problems.append(f"docs/cli.md's '## {cmd}' section does not mention {longest}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------
# (b) Config keys.

DEFAULTS = default.get_config()
SECTIONS = {k for k, v in DEFAULTS.items() if isinstance(v, ml_collections.ConfigDict)}
# A dotted name (`data.path`, `augment.*`), or after `config.` any name (`config.seed`).
KEY_RE = re.compile(
    r"(?<![\w/.$])(?P<prefix>config\.)?(?P<key>[A-Za-z_]\w*(?:\.(?:\w+|\*))+|[A-Za-z_]\w*)"
)
# `cv.json`, `train.py`: files, not keys.
FILE_SUFFIXES = {"json", "jsonl", "png", "py", "md", "html", "tsv", "csv", "sbatch", "txt",
                 "yml", "yaml", "wav", "flac", "zip", "mp3", "jaxexport", "tfrecord"}  # fmt: skip


def leaf_keys(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(leaf_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resolves(key: str) -> bool:
    """A section (`data`, `augment.*`) or a leaf (`data.path`) of the defaults."""
    node = DEFAULTS
    for part in key.split("."):
        if part == "*" and isinstance(node, ml_collections.ConfigDict):
            return True
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def shown_keys(text: str) -> list[tuple[str, str]]:
    """(key, where) of every dotted config key in code. `config.`-prefixed names count
    everywhere; bare `section.key` names in inline spans and shell blocks (in Python a
    variable may be called `model`)."""
    sources = [(s, False) for s in spans(text)]
    sources += [(body, lang in PYTHON_LANGS) for lang, body in blocks(text)]
    found = []
    for source, prefixed_only in sources:
        for m in KEY_RE.finditer(source):
            key = m["key"]
            parts = key.split(".")
            if m["prefix"]:
                if not (is_placeholder(key) or key in FILE_SUFFIXES):  # config.json
                    found.append((key, source))
            elif (not prefixed_only and len(parts) > 1 and parts[0] in SECTIONS
                  and not (len(parts) == 2 and parts[1] in FILE_SUFFIXES)):  # fmt: skip
                found.append((key, source))
    return found


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_shown_config_keys_exist(page):
    unknown = [f"{key}  (in: {where.strip()[:120]})" for key, where in shown_keys(read(page))
               if not resolves(key)]  # fmt: skip
    assert not unknown, "config keys not in sejax.configs.default.get_config():\n" + "\n".join(
        unknown
    )


def documented_defaults() -> dict[str, str]:
    """key -> default cell of every `| key | default | meaning |` row of configuration.md."""
    rows: dict[str, str] = {}
    for m in re.finditer(r"^\| `([\w.]+)` \| `([^`]*)` \|", read(DOCS / "configuration.md"), re.M):
        assert m[1] not in rows, f"configuration.md lists {m[1]} twice"
        rows[m[1]] = m[2]
    return rows


def test_configuration_page_lists_every_key_with_its_default():
    rows = documented_defaults()
    leaves = leaf_keys(DEFAULTS)
    assert sorted(set(leaves) - set(rows)) == [], "keys of default.py missing from the page"
    assert sorted(set(rows) - set(leaves)) == [], "keys on the page that default.py lacks"
    wrong = []
    for key, cell in rows.items():
        value = leaves[key]
        shown = ast.literal_eval(cell)
        if type(shown) is not type(value) or shown != value:
            wrong.append(f"{key}: page says {cell}, default.py has {value!r}")
    assert not wrong, "\n".join(wrong)


def test_experiment_configs_use_only_documented_keys():
    documented = set(documented_defaults())
    configs = sorted((ROOT / "experiments" / "configs").glob("*.py"))
    assert configs
    for path in configs:
        extra = set(leaf_keys(load_config(path))) - documented
        assert not extra, f"{path.name} sets keys the configuration page lacks: {sorted(extra)}"


# ------------------------------------------------------------------------------------------
# Python examples and module paths.


@functools.cache
def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


@functools.cache
def module_names(name: str) -> frozenset[str]:
    """Names defined at the top level of a sejax module (in `if` blocks too), and its
    submodules."""
    path = module_file(name)
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(getattr(node, "orelse", []))

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    if path.name == "__init__.py":
        names.update(p.stem for p in path.parent.glob("*.py") if p.stem != "__init__")
        names.update(p.name for p in path.parent.iterdir() if (p / "__init__.py").is_file())
    return frozenset(names)


def dotted_problem(dotted: str) -> str | None:
    """Why `sejax.a.b.c` names nothing, or None: the longest module prefix, then one name."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if module_file(".".join(parts[:n])):
            if n == len(parts) or parts[n] in module_names(".".join(parts[:n])):
                return None
            return f"{'.'.join(parts[:n])} defines no {parts[n]}"
    return f"no module {dotted}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_python_examples_import_what_exists(page):
    problems = []
    for lang, body in blocks(read(page)):
        if lang not in PYTHON_LANGS:
            continue
        tree = ast.parse(body)  # an example that does not parse fails here
        bound: dict[str, str] = {}  # local name -> sejax module it names
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "sejax":
                        problem = dotted_problem(a.name)
                        problems += [problem] if problem else []
                        # `import sejax.x as y` binds y to sejax.x; `import sejax.x`, sejax
                        bound[a.asname or "sejax"] = a.name if a.asname else "sejax"
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sejax":
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    problem = dotted_problem(full)
                    problems += [problem] if problem else []
                    if module_file(full):
                        bound[a.asname or a.name] = full
        for node in ast.walk(tree):
            is_name = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            if is_name and node.value.id in bound:
                problem = dotted_problem(f"{bound[node.value.id]}.{node.attr}")
                problems += [problem] if problem else []
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_named_modules_and_paths_exist(page):
    """`sejax.x.y` names and repository paths (`sejax/data/screening.py`) in inline code."""
    problems = []
    for span in spans(read(page)):
        for dotted in re.findall(r"(?<![\w/.])sejax(?:\.\w+)+", span):
            problem = dotted_problem(dotted)
            problems += [f"`{span}`: {problem}"] if problem else []
        token = span.strip()
        path_like = re.fullmatch(r"(sejax|tests|benchmarks|experiments|docs)/[\w./-]*", token)
        placeholder = re.search(r"/[A-Z_]+(/|$)", token)  # sejax/pretrained/NAME/
        if path_like and not placeholder and not (ROOT / token).exists():
            problems.append(f"`{span}`: no such file or folder")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------
# The layout drawn in the README.


def layout_entries() -> list[tuple[str, str]]:
    """(path, description) of each line of the README's Layout tree."""
    section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", read(README), re.M | re.S)
    assert section, "README.md has no '## Layout' section"
    (_, tree), *_ = blocks(section[1])
    entries, stack = [], []
    for line in tree.splitlines():
        m = re.match(r"^( *)(\S+)(.*)$", line)
        if not m:
            continue
        depth = len(m[1]) // 2
        stack = [*stack[:depth], m[2]]
        entries.append(("".join(stack), m[3].strip()))
    return entries


def test_layout_lists_every_module_once_with_its_job():
    entries = layout_entries()
    listed = [path for path, _ in entries]
    on_disk = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "sejax").rglob("*.py")
        if not (p.name == "__init__.py" and p.parent != ROOT / "sejax")
    )
    modules = sorted(p for p in listed if p.endswith(".py"))
    assert len(modules) == len(set(modules)), "a module is listed twice"
    assert sorted(set(on_disk) - set(modules)) == [], "modules the layout does not list"
    assert sorted(set(modules) - set(on_disk)) == [], "the layout lists modules that do not exist"
    for path, description in entries:
        assert (ROOT / path).exists(), f"the layout lists {path}, which does not exist"
        assert description or path == "sejax/", f"the layout gives {path} no description"


# ------------------------------------------------------------------------------------------
# (c) The MkDocs nav, (d) links.


def nav_files(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [f for item in nav for f in nav_files(item)]
    if isinstance(nav, dict):
        return [f for value in nav.values() for f in nav_files(value)]
    return []


def test_mkdocs_nav_is_exactly_the_docs_pages():
    config = yaml.safe_load(read(ROOT / "mkdocs.yml"))
    assert config["docs_dir"] == "docs"
    files = nav_files(config["nav"])
    assert len(files) == len(set(files)), "a page is in the nav twice"
    missing = [f for f in files if not (DOCS / f).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist: {missing}"
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(files) == pages, "every docs page must be in the nav"


def slug(heading: str) -> str:
    """The anchor of a heading, as Python-Markdown's toc (MkDocs) and GitHub make it."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    return frozenset(
        slug(m[1]) for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", prose(read(path)), re.M)
    )


LINK_RE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_relative_links_resolve(page):
    problems = []
    links = LINK_RE.findall(prose(read(page)))
    for target in links:
        if re.match(r"^[a-z][\w+.-]*:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{target}: {dest.relative_to(ROOT)} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not problems, "\n".join(problems)


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")  # the docs extra: pip install -e '.[docs]'
    out = subprocess.run(
        # Not --quiet: MkDocs counts the warnings it logs, and --quiet hides them from --strict.
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()

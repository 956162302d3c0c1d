"""Sphinx extension of the schnetpack-molspectra docs: pages generated at build time, so they cannot go stale.

- ``_generated/configuration.md``: every ``globals.*`` key and experiment with its default (composed as
  ``spktrain experiment=<name> --cfg job`` composes it) and its meaning (the comments of the YAML files in
  ``schnetpack_molspectra/configs``), the config groups, the ``spkmd`` configs, and every file itself;
- ``_generated/models.md``: the shipped models' table and cards (``spkspectra models --markdown`` and
  ``spkspectra models``);
- ``_generated/api/<module>.md``: one autodoc page per module of the package (modules found by walking it).
"""

import importlib
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

import yaml

DOCS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATED = os.path.join(DOCS, "_generated")

#: packages whose modules get an API page
API_PACKAGES = ["schnetpack_molspectra", "hydra_plugins.molspectra_searchpath"]
#: modules left out of the API reference
API_EXCLUDED: List[str] = []
#: docstrings written as plain text, not reStructuredText (aligned columns, indented continuation lines): shown
#: as they are, in a literal block, instead of being parsed (which fails the build under -W)
VERBATIM_DOCSTRINGS = {
    "schnetpack_molspectra.atomistic.ElectronicSpatialExtent",
    "schnetpack_molspectra.data.simulate.cluster",
    "schnetpack_molspectra.data.simulate.xtb",
    "schnetpack_molspectra.data.spectrum_files",
    "schnetpack_molspectra.train.losses.ContrastiveSimilarities",
}


def write_if_changed(path: str, text: str) -> None:
    """Write ``text`` to ``path`` unless it holds it already (an unchanged page is not re-read by Sphinx)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# ----------------------------------------------------------------------------------------- YAML comments


def split_comment(rest: str) -> Tuple[str, str]:
    """``value  # comment`` -> (value, comment); a ``#`` inside quotes is part of the value."""
    quote = None
    for i, char in enumerate(rest):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1 :].strip()
    return rest.strip(), ""


KEY = re.compile(r"^([A-Za-z_][\w.+/-]*)\s*:(?:\s+(.*)|$)")


def parse_yaml_comments(text: str) -> Tuple[str, Optional[str], Dict[str, str], Dict[str, str]]:
    """A config file's header comment, its ``@package`` directive, and per dotted key (relative to the
    file's package; list items as ``[]``) its comment (the comment lines right above it and the one
    after it, with its continuation lines) and its raw value as written."""
    lines = text.splitlines()
    header, package, start = [], None, 0
    for start, line in enumerate(lines):  # noqa: B007 - start is the first line after the header
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        body = stripped.lstrip("#").strip()
        if body.startswith("@package"):
            package = body.split(None, 1)[1].strip()
        else:
            body = stripped[1:].rstrip()
            header.append(body[1:] if body.startswith(" ") else body)
    else:
        start = len(lines)
    comments: Dict[str, str] = {}
    values: Dict[str, str] = {}
    stack: List[Tuple[int, str]] = []
    pending: List[str] = []
    last: Optional[Tuple[str, int]] = None  # key with a trailing comment, and its indent
    for line in lines[start:]:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            pending, last = [], None
            continue
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if last is not None and indent > last[1]:
                comments[last[0]] += " " + body  # continuation of a trailing comment
            else:
                pending.append(body)
            continue
        if stripped.startswith("-"):
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, "[]"))
            stripped = stripped[1:].lstrip()
            indent = len(line) - len(stripped)
            if not stripped:
                pending, last = [], None
                continue
        match = KEY.match(stripped)
        if not match:
            pending, last = [], None
            continue
        key, rest = match.group(1), match.group(2) or ""
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key]).replace(".[]", "[]")
        value, trailing = split_comment(rest)
        comment = " ".join(pending) + (" — " if pending and trailing else "") + trailing
        if comment:
            comments[path] = comment
        values[path] = value
        stack.append((indent, key))
        pending = []
        last = (path, indent) if trailing else None
    return "\n".join(header).strip("\n"), package, comments, values


# ------------------------------------------------------------------------------------- config reference


def fmt(value: Any) -> str:
    """A config value as written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def cell(text: str) -> str:
    """Plain text (a YAML comment) for a Markdown table cell: nothing in it read as markup (``<run dir>`` as
    HTML, ``$`` as maths, ``*`` as emphasis); text between backticks stays code."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):
        for char, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("$", "\\$"), ("*", "\\*")):
            parts[i] = parts[i].replace(char, escaped)
    return "`".join(parts).replace("|", "\\|")


def code(text: str) -> str:
    """A value as inline code for a Markdown table cell (backticks inside are doubled around)."""
    text = text.replace("\n", " ").replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


class ConfigFile:
    def __init__(self, root: str, path: str):
        self.path = path
        self.rel = os.path.relpath(path, root)
        self.group = os.path.dirname(self.rel).replace(os.sep, "/")
        self.name = os.path.splitext(os.path.basename(path))[0]
        with open(path, encoding="utf-8") as f:
            self.text = f.read()
        self.header, package, self.comments, self.values = parse_yaml_comments(self.text)
        default = self.group.replace("/", ".")
        self.package = default if package is None else ("" if package == "_global_" else package)
        self.data = yaml.safe_load(self.text) or {}

    def absolute(self, key: str) -> str:
        return f"{self.package}.{key}" if self.package else key


def config_files(root: str) -> List[ConfigFile]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".yaml"):
                found.append(ConfigFile(root, os.path.join(folder, name)))
    return sorted(found, key=lambda c: (c.group, c.name))


def compose_globals(experiment: str) -> Dict[str, Any]:
    """The experiment's ``globals`` as ``spktrain experiment=<name> --cfg job`` composes them (unresolved)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="schnetpack.configs", version_base=None):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    return OmegaConf.to_container(cfg.globals, resolve=False)


def schnetpack_groups() -> List[str]:
    """The config groups of SchNetPack's ``train`` config (the others are added with ``+group=...``)."""
    import schnetpack

    with open(os.path.join(os.path.dirname(schnetpack.__file__), "configs", "train.yaml"), encoding="utf-8") as f:
        defaults = yaml.safe_load(f)["defaults"]
    return [next(iter(d)) for d in defaults if isinstance(d, dict)]


#: the meanings of SchNetPack's own ``default_globals``, which the experiments inherit
SCHNETPACK_GLOBALS = {"model_path": "file name of the best model in the run directory (SchNetPack's `default_globals`)"}

GLOBAL_REF = re.compile(r"globals\.(\w+)")
SELECT_REF = re.compile(r"oc\.select:globals\.(\w+),([^}]*)\}")


def yaml_block(text: str) -> List[str]:
    return ["````yaml", text.rstrip("\n"), "````"]


def details(summary: str, body: List[str]) -> List[str]:
    return ["<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>", ""]


def configuration_page() -> str:
    import schnetpack_molspectra

    package_dir = os.path.dirname(schnetpack_molspectra.__file__)
    train = config_files(os.path.join(package_dir, "configs"))
    md = config_files(os.path.join(package_dir, "md_configs"))
    experiments = [c for c in train if c.group == "experiment"]
    names = [c.name for c in experiments]
    composed = {c.name: compose_globals(c.name) for c in experiments}

    # the meaning of each globals key: the experiments' comments on it (one, or each experiment's own)
    keys: List[str] = []
    for c in experiments:
        keys += [k for k in composed[c.name] if k not in keys]
    # globals the configs read with a default (${oc.select:globals.key,default}) that no experiment sets
    optional: Dict[str, Tuple[str, str, str]] = {}
    used_by: Dict[str, List[str]] = {}
    for c in train:
        for key, value in c.values.items():
            for ref in GLOBAL_REF.findall(value):
                where = c.absolute(key) if c.group != "experiment" else f"{c.name}: {key}"
                used_by.setdefault(ref, [])
                if where not in used_by[ref]:
                    used_by[ref].append(where)
            for ref, default in SELECT_REF.findall(value):
                if ref not in keys and ref not in optional:
                    optional[ref] = (default.strip(), c.comments.get(key, ""), c.rel)

    out = [
        "<!-- generated by docs/_ext/molspectra_docs.py from schnetpack_molspectra/configs: do not edit -->",
        "",
        "## Experiments",
        "",
        "`spktrain experiment=<name>`; each file is shown in full under [Every file](#every-file).",
        "",
        "| experiment | what |",
        "|---|---|",
    ]
    for c in experiments:
        lines = c.header.splitlines()
        first = next((i for i, line in enumerate(lines) if line.startswith(" ")), len(lines))
        summary = " ".join(line.strip() for line in lines[:first])
        out.append(f"| `{c.name}` | {cell(summary)} |")
    out += [
        "",
        "## `globals` keys",
        "",
        "Every key of `globals` in each experiment, as `spktrain experiment=<name> --cfg job` composes it "
        "(`–`: the experiment has no such key). Override one with `globals.<key>=<value>`; the configs refer "
        "to them as `${globals.<key>}`. Meanings are the comments of the experiment files.",
        "",
        "| key | " + " | ".join(f"`{n}`" for n in names) + " | meaning |",
        "|---|" + "---|" * len(names) + "---|",
    ]
    for key in keys:
        defaults = [code(fmt(composed[n][key])) if key in composed[n] else "–" for n in names]
        meanings: Dict[str, List[str]] = {}
        for c in experiments:
            comment = c.comments.get(f"globals.{key}")
            if comment:
                meanings.setdefault(comment, []).append(c.name)
        if not meanings and key in SCHNETPACK_GLOBALS:
            meanings = {SCHNETPACK_GLOBALS[key]: []}
        if len(meanings) <= 1:
            meaning = next(iter(meanings), "")
        else:
            meaning = "; ".join(f"{', '.join(n)}: {m}" for m, n in meanings.items())
        out.append(f"| `{key}` | " + " | ".join(defaults) + f" | {cell(meaning)} |")
    if optional:
        out += [
            "",
            "Keys that no experiment sets, read with a default where they are used "
            "(`${oc.select:globals.<key>,<default>}`); add one with `+globals.<key>=<value>`:",
            "",
            "| key | default | meaning | read in |",
            "|---|---|---|---|",
        ]
        for key, (default, comment, rel) in sorted(optional.items()):
            out.append(f"| `{key}` | `{default}` | {cell(comment)} | `configs/{rel}` |")
    out += [
        "",
        "### Where each key goes",
        "",
        "| key | config entries that read it |",
        "|---|---|",
    ]
    for key in sorted(used_by):
        out.append(f"| `globals.{key}` | " + ", ".join(code(w) for w in used_by[key]) + " |")

    groups = schnetpack_groups()
    out += [
        "",
        "## Config groups",
        "",
        "Chosen with `<group>=<name>` (groups that SchNetPack's `train` config does not have, "
        f"here {', '.join(sorted({c.group.split('/')[0] for c in train} - set(groups) - {'experiment'}))}, "
        "with `+<group>=<name>`); the experiments pick them in their `defaults` lists.",
        "",
        "| choice | package | what |",
        "|---|---|---|",
    ]
    for c in train:
        if c.group == "experiment":
            continue
        plus = "" if c.group.split("/")[0] in groups else "+"
        summary = " ".join(line.strip() for line in c.header.splitlines() if not line.startswith(" "))
        out.append(f"| `{plus}{c.group}={c.name}` | `{c.package or '_global_'}` | {cell(summary)} |")
    out += [
        "",
        "## `spkmd` configs",
        "",
        "The configs `spkmd` reads (`schnetpack_molspectra/md_configs`; see [Fine-tuning and MD](finetuning.md)). "
        "The primary config's keys:",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]
    primary = next(c for c in md if c.group == "" and c.name == "config")
    for key, value in primary.data.items():
        if key in ("defaults", "hydra"):
            continue
        out.append(f"| `{key}` | `{fmt(value)}` | {cell(primary.comments.get(key, ''))} |")
    out += ["", "| choice | what |", "|---|---|"]
    for c in md:
        if c.group:
            summary = " ".join(line.strip() for line in c.header.splitlines() if not line.startswith(" "))
            out.append(f"| `{c.group}={c.name}` | {cell(summary)} |")
    out += ["", "## Every file", ""]
    for title, files in (("configs", train), ("md_configs", md)):
        for c in files:
            where = f"schnetpack_molspectra/{title}/{c.rel}"
            out += details(f"<code>{where}</code>", yaml_block(c.text))
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ shipped models


def spkspectra(*args: str) -> str:
    """The output of the installed ``spkspectra`` command (the one beside this Python first)."""
    command = os.path.join(os.path.dirname(sys.executable), "spkspectra")
    if not os.path.exists(command):
        command = shutil.which("spkspectra") or "spkspectra"
    return subprocess.run([command, *args], check=True, capture_output=True, text=True).stdout


def models_page() -> str:
    cards = spkspectra("models").strip().split("\n\n")
    out = [
        "<!-- generated by docs/_ext/molspectra_docs.py from `spkspectra models`: do not edit -->",
        "",
        spkspectra("models", "--markdown").strip(),
        "",
        "## The model cards",
        "",
        "As `spkspectra models` prints them (every training piece with its steps, wall time and the "
        "validation figures at its end):",
        "",
    ]
    for card in cards:
        name = card.split(":", 1)[0]
        out += [f"### `{name}`", "", "```text", card, "```", ""]
    return "\n".join(out)


# -------------------------------------------------------------------------------------------- API pages


def api_modules() -> List[str]:
    modules = []
    for name in API_PACKAGES:
        package = importlib.import_module(name)
        modules.append(name)
        for info in pkgutil.walk_packages(package.__path__, prefix=name + "."):
            if info.name not in API_EXCLUDED and not info.name.rsplit(".", 1)[-1].startswith("_"):
                modules.append(info.name)
    return sorted(modules)


def api_pages() -> List[str]:
    folder = os.path.join(GENERATED, "api")
    modules = api_modules()
    wanted = {f"{m}.md" for m in modules}
    if os.path.isdir(folder):
        for stale in set(os.listdir(folder)) - wanted:
            os.remove(os.path.join(folder, stale))
    for module in modules:
        text = "\n".join(
            [
                f"# `{module}`",
                "",
                "```{eval-rst}",
                f".. automodule:: {module}",
                "   :members:",
                "   :ignore-module-all:",
                "   :show-inheritance:",
                "```",
                "",
            ]
        )
        write_if_changed(os.path.join(folder, f"{module}.md"), text)
    return modules


def verbatim_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: List[str]) -> None:
    """The docstrings of :data:`VERBATIM_DOCSTRINGS` as a literal block of their text."""
    if name in VERBATIM_DOCSTRINGS:
        text = inspect.getdoc(obj) or ""
        lines[:] = ["::", ""] + [f"   {line}" if line else "" for line in text.splitlines()] + [""]


def generate(app: Any) -> None:
    write_if_changed(os.path.join(GENERATED, "configuration.md"), configuration_page())
    write_if_changed(os.path.join(GENERATED, "models.md"), models_page())
    api_pages()


def setup(app: Any) -> Dict[str, Any]:
    app.connect("builder-inited", generate)
    # after napoleon's handler (priority 500), so that the text shown is the docstring as written
    app.connect("autodoc-process-docstring", verbatim_docstring, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

r"""A trial's config in the job without Hydra, where the sweep changes only values.

Every task of a sweep needs its trial's config. Composing it with Hydra costs the task ~0.3 s of
CPU (Hydra's import and one compose), paid once per task: 10,000 tasks spend most of an hour on
it. When no swept key is a config group, the trial's config is the experiment composed at launch
(`experiment.yaml`: base overrides applied, swept keys at their defaults) with the trial's values
set, exactly as Hydra applies a `key=value` override (`OmegaConf.update(..., merge=True)`), and
planning already validates trials this way. So launch records each axis's values, parsed once by
Hydra's grammar (`launch.json` "values"), and the job sets them with OmegaConf alone. A sweep over
a config group keeps composing in the job.

The trial's config then fills in the stage's command (`stage_argv`). A `command:` is a bash line:
each ${...} in it is resolved by OmegaConf against the trial's config (nested ones and resolver
calls included) and its string value goes in as data, quoted for where it sits: outside quotes as
one single-quoted word, inside "..." with \ " $ ` escaped, inside '...' or $'...' by closing the
quotes around a quoted word. What the user writes as shell code ($HOME, $(date), \${HOME}, which
OmegaConf reads as a literal ${HOME}) reaches bash unchanged. Where no quoting is reliable (inside
`...` or a shell ${...}, after a here-document) a value is refused, and inside $((...)) only an
integer is taken: bash evaluates arithmetic text as code. An `argv:` list is resolved word by
word, each staying one argument, and runs without a shell. Exit status: bash's, the line's last
command (no `set -e`, no `pipefail`), as in an sbatch script.

This module imports no Hydra: it is what runs on compute nodes ten thousand times.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, grammar_parser
from omegaconf.errors import GrammarParseError, InterpolationKeyError, OmegaConfBaseException
from omegaconf.grammar_visitor import OmegaConfGrammarLexer, OmegaConfGrammarParser  # type: ignore[attr-defined]

from slurmflow.errors import UsageError
from slurmflow.fsio import write_atomic

# [(key, [value, ...]), ...] in sweep order; JSON values as Hydra's grammar parsed them.
AxisValues = Sequence[tuple[str, Sequence[Any]]]


def json_exact(value: Any) -> bool:
    """Whether a value survives a trip through launch.json unchanged (type included)."""
    try:
        return bool(json.loads(json.dumps(value)) == value) and _same_types(json.loads(json.dumps(value)), value)
    except (TypeError, ValueError):
        return False


def _same_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return all(_same_types(a[k], b[k]) for k in a)
    return True


def trial_values(axes: AxisValues, index: int) -> list[tuple[str, Any]]:
    """The values of trial `index` in the cartesian product, the last axis varying fastest (the
    order `sweep.expand` numbers trials in, Hydra's --multirun order)."""
    out: list[tuple[str, Any]] = []
    rest = index
    for key, values in reversed(axes):
        rest, pos = divmod(rest, len(values))
        out.append((key, values[pos]))
    if rest:
        raise ValueError(f"trial {index} is outside a sweep of {_size(axes)} trials")
    return out[::-1]


def _size(axes: AxisValues) -> int:
    n = 1
    for _, values in axes:
        n *= len(values)
    return n


def build(experiment_yaml: Path, values: Sequence[tuple[str, Any]]) -> DictConfig:
    """experiment.yaml with the trial's values set as Hydra sets a `key=value` override."""
    cfg = OmegaConf.load(experiment_yaml)
    assert isinstance(cfg, DictConfig)
    return build_from(cfg, values)


def build_from(base: DictConfig, values: Sequence[tuple[str, Any]]) -> DictConfig:
    """A copy of `base` with the trial's values set as Hydra sets a `key=value` override."""
    cfg = OmegaConf.create(OmegaConf.to_container(base, resolve=False))
    assert isinstance(cfg, DictConfig)
    for key, value in values:
        OmegaConf.update(cfg, key, value, merge=True)
    OmegaConf.set_struct(cfg, True)  # as Hydra's compose returns it: no new keys by accident
    return cfg


# ---- a stage's command ------------------------------------------------------------------------

# Put before every command line. bash outlives the command it is running on each signal the task
# forwards: a handled signal (unlike an ignored one, which programs would inherit as ignored) is
# reset to its default in the programs bash starts, so they see it. HUP, INT and TERM end the line
# once the running command has ended, with that command's status; USR1 and USR2 let it go on.
SHELL_PREAMBLE = "trap exit HUP INT TERM; trap : USR1 USR2\n"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DQ_SPECIAL = re.compile(r'[\\"$`]')  # what a backslash escapes inside "..." (`!` only interactively)
_OPENERS = {"sq": "'", "dq": '"', "ansi": "$'", "sub": "$(", "param": "${", "arith": "$((", "bq": "`"}


def to_yaml(cfg: DictConfig) -> str:
    """The trial's config as the YAML file the task leaves in its trial directory."""
    return OmegaConf.to_yaml(cfg)


def empty() -> DictConfig:
    return OmegaConf.create({})


def resolved_yaml(cfg: DictConfig) -> str:
    """The trial's config as it is used: interpolations resolved (in the job, so `${oc.env:...}`
    reads the job's environment), without the experiment's `sweep:` block, which no trial has. A
    value that resolves only elsewhere (`${hydra:...}`, a resolver of the app) leaves the file
    unresolved, saying why in its first line."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
        assert isinstance(data, dict)
        data.pop("sweep", None)
        return OmegaConf.to_yaml(OmegaConf.create(data))
    except OmegaConfBaseException as exc:
        return f"# not resolved: {first_line(exc)}\n" + OmegaConf.to_yaml(cfg)


def write_hydra_dir(where: Path, cfg: DictConfig, overrides: Sequence[str]) -> None:
    """`.hydra/` of a trial, where a Hydra user looks: `config.yaml` (the trial's composed config,
    unresolved, as Hydra writes it) and `overrides.yaml` (what made this trial)."""
    where.mkdir(mode=0o700, exist_ok=True)
    data = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(data, dict)
    data.pop("sweep", None)
    write_atomic(where / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(data)))
    # Hydra keeps overrides of its own config (hydra.*, hydra/...) out of overrides.yaml.
    task = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    write_atomic(where / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(task)))


def stage_argv(command: str | None, argv: Sequence[str] | None, cfg: DictConfig) -> list[str]:
    """What a stage runs, every ${...} resolved against the trial's config: for `command:`, bash
    running the line with each value inserted as one quoted word; for `argv:`, the words, each
    exactly one argument, run without a shell. Raises UsageError (one line) on an interpolation
    that does not resolve or a line whose quotes do not balance."""
    if (command is None) == (argv is None):
        raise UsageError("a stage runs command: (a bash line) or argv: (a list of words): give exactly one")
    if argv is not None:
        if isinstance(argv, str) or not argv or not all(isinstance(w, str) for w in argv):
            raise UsageError(f"argv: {argv!r} must be a non-empty list of strings: [program, arg, ...]")
        words = [_word(w, cfg) for w in argv]
        if any("\0" in w for w in words):
            raise UsageError(f"argv: {argv!r} resolves to a NUL byte, which no program argument can hold")
        return words
    assert command is not None
    line = shell_line(command, cfg)
    if "\0" in line:
        raise UsageError(f"{command!r} resolves to a NUL byte, which no program argument can hold")
    bash = shutil.which("bash")
    if bash is None:
        raise UsageError("bash not found on PATH: a stage's command: is a bash line; install bash, or use argv:")
    return [bash, "-c", SHELL_PREAMBLE + line]


def shell_line(template: str, cfg: DictConfig) -> str:
    """The bash line of a `command:` template: each ${...} resolved and quoted for where it sits."""
    line = _Line(template)
    for is_interpolation, text in pieces(template):
        if is_interpolation:
            line.insert(text, resolve(text, cfg, bash=True))
        else:
            line.feed(text)
    return line.finish()


def _word(word: str, cfg: DictConfig) -> str:
    return "".join(resolve(t, cfg, bash=False) if inter else t for inter, t in pieces(word))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # OmegaConf names the Python exception a resolver raised; the user needs only what it said.
    return re.sub(r"^\w+ raised while resolving interpolation: ", "", text[0]) if text else "cannot resolve"


def pieces(template: str) -> list[tuple[bool, str]]:
    """The template as OmegaConf's grammar reads it: literal text, its escapes undone (`\\${` is a
    literal `${`), and the source of each interpolation, in order."""
    if "${" not in template:
        return [(False, template)]
    try:
        tree = grammar_parser.parse(template)
    except GrammarParseError as exc:
        raise UsageError(
            f"cannot read the ${{...}} in {template!r}: {first_line(exc)}; a literal ${{ is written \\${{"
        ) from exc
    nodes = list(tree.getChild(0).getChildren())
    out: list[tuple[bool, str]] = []
    for node, after in zip_longest(nodes, nodes[1:]):
        if isinstance(node, OmegaConfGrammarParser.InterpolationContext):
            out.append((True, template[node.start.start : node.stop.stop + 1]))
            continue
        # The unescaping of OmegaConf's GrammarVisitor._unescape, for the tokens of a top-level string.
        kind, text = node.symbol.type, str(node.symbol.text)
        if kind == OmegaConfGrammarLexer.ESC_INTER:  # \${, or \\\${ ...: the backslashes halved, then a literal ${
            text = text[-(len(text) // 2 + 1) :]
        elif kind == OmegaConfGrammarLexer.ESC or (
            kind == OmegaConfGrammarLexer.TOP_ESC and isinstance(after, OmegaConfGrammarParser.InterpolationContext)
        ):
            text = text[1::2]  # \\ before an interpolation is one backslash
        if out and not out[-1][0]:
            out[-1] = (False, out[-1][1] + text)
        else:
            out.append((False, text))
    return out


def resolve(source: str, cfg: DictConfig, *, bash: bool) -> str:
    """One interpolation, resolved by OmegaConf against the trial's config and rendered as OmegaConf
    renders it inside a string (a list as `[1, 'a']`, null as `None`)."""
    holder = OmegaConf.create({"v": "_" + source}, parent=cfg)  # "_": always a string, never a bare node
    try:
        value = holder["v"]
    except OmegaConfBaseException as exc:
        shown = source.replace("\n", "\\n")
        name = source[2:-1].strip()
        hint = ""
        if isinstance(exc, InterpolationKeyError) and _NAME.fullmatch(name) and f"'{name}' not" in str(exc):
            hint = (
                f"; for a shell variable write ${name} or \\${{{name}}}"
                if bash
                else f"; argv: runs no shell: for an environment variable write ${{oc.env:{name}}}"
            )
        raise UsageError(f"cannot resolve {shown}: {first_line(exc)}{hint}") from exc
    assert isinstance(value, str)
    return value[1:]


def _sq(value: str) -> str:
    """One bash word holding exactly `value`. Always quoted: a bare word next to the template's
    text could still expand (`~`, `{a,b}`)."""
    return "'" + value.replace("'", "'\\''") + "'"


class _Line:
    """The bash line being built: follows bash's quoting through the template's literal text, so
    that each value is quoted for the context it lands in (man bash, QUOTING and EXPANSION).

    Frames: cmd (the line, or `$(...)`: `sub`), dq "...", sq '...', ansi $'...', param ${...},
    arith $((...)) or ((...)), bq `...`, comment. A value goes in as data in cmd, dq, sq, ansi;
    in arith only an integer is data; in param and bq it cannot be quoted reliably and is refused.
    After a here-document (<<) the text is the document's, which no quoting reaches."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.out: list[str] = []
        self.stack: list[list[Any]] = [["cmd", 0]]  # [kind, parenthesis or brace depth]
        self.escaped = False  # the last character read was an unquoted backslash
        self.dollar = False  # ... a bare $
        self.name = False  # ... inside $NAME, which a value right after would lengthen
        self.prev = "\n"  # the last character written: a word starts after a blank or an operator
        self.heredoc = False

    def _push(self, kind: str) -> None:
        self.stack.append([kind, 0])

    def feed(self, text: str) -> None:
        self.out.append(text)
        i = 0
        while i < len(text) and not self.heredoc:
            i = self._char(text, i) + 1

    def _char(self, text: str, i: int) -> int:
        """Read text[i] (and what it starts); return the index of the last character read."""
        c, frame = text[i], self.stack[-1]
        kind, ahead = frame[0], text[i + 1 : i + 2]
        word_start = self.prev in " \t\n;&|()<>"
        in_name = self.name and (c == "_" or (c.isascii() and c.isalnum()))
        self.prev, self.dollar, self.name = c, False, in_name
        if self.escaped:
            self.escaped = False
        elif in_name:  # $NAME goes on
            pass
        elif kind == "comment":
            if c == "\n":
                self.stack.pop()
        elif kind == "sq" or (kind == "ansi" and c == "'"):
            if c == "'":
                self.stack.pop()
        elif c == "\\":
            self.escaped = True
        elif kind == "ansi":
            pass
        elif c == "`" and kind == "bq":
            self.stack.pop()
        elif c == "`":
            self._push("bq")
        elif c == "$":
            return self._dollar(text, i, kind)
        elif kind == "dq":
            if c == '"':
                self.stack.pop()
        elif c in "\"'":
            self._push("dq" if c == '"' else "sq")
        elif kind == "param":
            if c == "{":
                frame[1] += 1
            elif c == "}":
                frame[1] -= 1
                if frame[1] < 0:
                    self.stack.pop()
        elif kind == "arith":
            if c == "(":
                frame[1] += 1
            elif c == ")" and frame[1] == 0 and ahead == ")":
                self.stack.pop()
                self.prev = ")"
                return i + 1
            elif c == ")":
                frame[1] -= 1
        else:  # cmd, sub, bq
            return self._command(text, i, frame, word_start)
        return i

    def _dollar(self, text: str, i: int, kind: str) -> int:
        if text.startswith("$((", i):
            self._push("arith")
            self.prev = "("
            return i + 2
        ahead = text[i + 1 : i + 2]
        if ahead in ("(", "{"):
            self._push("sub" if ahead == "(" else "param")
        elif ahead in ("'", '"') and kind != "dq":  # $'...' and $"..."; inside "...", a plain $
            self._push("ansi" if ahead == "'" else "dq")
        elif ahead != "$":  # $$ is whole; $NAME goes on while name characters follow
            self.dollar = True
            self.name = ahead == "_" or (ahead.isascii() and ahead.isalpha())
            return i
        self.prev = ahead
        return i + 1

    def _command(self, text: str, i: int, frame: list[Any], word_start: bool) -> int:
        c = text[i]
        if c == "#" and word_start:
            self._push("comment")
        elif c == "(" and word_start and text.startswith("((", i):
            self._push("arith")
            return i + 1
        elif c == "(":
            frame[1] += 1
        elif c == ")" and frame[1] > 0:
            frame[1] -= 1
        elif c == ")" and frame[0] == "sub":
            self.stack.pop()
        elif text.startswith("<<<", i):
            self.prev = "<"
            return i + 2
        elif text.startswith("<<", i):
            self.heredoc = True
        return i

    def insert(self, source: str, value: str) -> None:
        kinds = [f[0] for f in self.stack]
        kind = kinds[-1]
        if self.heredoc:
            raise UsageError(
                f"{source} follows a here-document (<<) in {self.template!r}, whose text no quoting "
                f"reaches: write the value to a file first, or use a here-string (<<< {source})"
            )
        if kind == "comment":
            return
        if self.escaped:
            raise UsageError(f"a backslash just before {source} in {self.template!r} would escape its value: remove it")
        if self.dollar:
            raise UsageError(f"a $ right before {source} in {self.template!r} would expand its value: remove the $")
        if "bq" in kinds:
            raise UsageError(f"{source} inside `...` in {self.template!r} cannot be quoted: write $(...) instead")
        if "param" in kinds:
            raise UsageError(
                f"{source} inside a shell ${{...}} in {self.template!r} cannot be quoted: "
                f"set a shell variable first (v={source}; ...$v...)"
            )
        if kind == "arith" and not _INTEGER.fullmatch(value):
            raise UsageError(
                f"{source} inside $((...)) in {self.template!r} is {value!r}, not an integer: bash would evaluate it"
            )
        if kind == "arith":
            text = value
        elif kind == "dq":  # "" first ends a $NAME just before: "$HOME""value"
            text = '""' * self.name + _DQ_SPECIAL.sub(lambda m: "\\" + m.group(), value)
        elif kind == "sq":
            text = "'" + _sq(value) + "'"
        elif kind == "ansi":
            text = "'" + _sq(value) + "$'"
        else:
            text = _sq(value)
        self.out.append(text)
        self.prev = text[-1] if text else self.prev

    def finish(self) -> str:
        if self.stack[-1][0] == "comment":
            self.stack.pop()
        kind = self.stack[-1][0]
        if not self.heredoc and len(self.stack) > 1:
            what = "quotes" if kind in ("sq", "dq", "ansi") else "brackets"
            raise UsageError(
                f"unbalanced {what} in {self.template!r}: a {_OPENERS[kind]} is never closed; balance the {what}"
            )
        return "".join(self.out)

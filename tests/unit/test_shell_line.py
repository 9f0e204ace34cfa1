"""A stage's `command:` is a bash line and every ${...} in it is data: each value reaches the program
as exactly the string OmegaConf resolves, whatever quoting context it sits in, and runs nothing."""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from slurmflow.errors import UsageError
from slurmflow.experiment import trialcfg

# Prints its arguments as a Python list: what the program got, exactly.
PRINTER = f"{shlex.quote(sys.executable)} -c 'import sys; print(repr(sys.argv[1:]))'"

# As a config holds them: `\${` is OmegaConf's escape of a literal `${`.
HOSTILE = [
    "; touch {m}/semicolon",
    "$(touch {m}/dollar-paren)",
    "`touch {m}/backtick`",
    "a\nb; touch {m}/newline",
    "'; touch {m}/single; '",
    '"; touch {m}/double; "',
    "'\\''",
    "\"'\"'",
    "*",
    "~",
    "~root",
    "{a,b}",
    " two  spaces ",
    "tab\there",
    "é ✓ 日本",
    "",
    "\\",
    "ends with a backslash\\",
    "!x !! !$",
    "\\${HOME}",
    "$HOME",
    "$'\\x41'",
    "}",
    ")",
    "-n",
    "%s %q",
    "| touch {m}/pipe & touch {m}/amp > {m}/redirect",
    "carriage\rreturn",
]

# Where a value can sit; {} is where the interpolation goes, and how the program sees the word.
CONTEXTS = {
    "bare": ("{}", "{}"),
    "joined to a word": ("pre{}post", "pre{}post"),
    "assignment-like": ("--opt={}", "--opt={}"),
    "double quotes": ('"<{}>"', "<{}>"),
    "single quotes": ("'<{}>'", "<{}>"),
    "ANSI-C quotes": ("$'<{}>'", "<{}>"),
    "after a shell variable in double quotes": ('"$SF_WORD{}"', "word{}"),
    "after a shell variable": ("$SF_WORD{}", "word{}"),
    "in $(...) in double quotes": ('"$(printf %s {})"', "{}"),
    "in double quotes in $(...)": ('"$(printf %s "{}")"', "{}"),
    "in single quotes in $(...)": ("\"$(printf %s '{}')\"", "{}"),
}


def config(values: list[str], tmp: Path) -> DictConfig:
    return OmegaConf.create({f"v{i}": v.replace("{m}", str(tmp)) for i, v in enumerate(values)})


def run(argv: list[str], stdin: str | None = None) -> list[str]:
    env = {**os.environ, "SF_WORD": "word"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, input=stdin, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    got = ast.literal_eval(done.stdout)
    assert isinstance(got, list)
    return [str(w) for w in got]


@pytest.mark.parametrize("context", list(CONTEXTS))
def test_every_hostile_value_arrives_exactly_and_runs_nothing(context: str, tmp_path: Path) -> None:
    template, seen = CONTEXTS[context]
    cfg = config(HOSTILE, tmp_path)
    line = " ".join([PRINTER, *(template.replace("{}", f"${{v{i}}}") for i in range(len(HOSTILE)))])
    argv = trialcfg.stage_argv(line, None, cfg)
    assert argv[1] == "-c" and os.path.basename(argv[0]) == "bash"
    expected = [seen.replace("{}", str(cfg[f"v{i}"])) for i in range(len(HOSTILE))]
    if "$(" in template:  # a command substitution drops trailing newlines, as bash does
        expected = [e.rstrip("\n") for e in expected]
    assert run(argv) == expected
    assert list(tmp_path.iterdir()) == []  # no value ran as code


def test_argv_form_keeps_each_word_one_argument(tmp_path: Path) -> None:
    cfg = config(HOSTILE, tmp_path)
    words = [sys.executable, "-c", "import sys; print(repr(sys.argv[1:]))"]
    words += [f"${{v{i}}}" for i in range(len(HOSTILE))] + ["x=${v0}y", "$HOME", "\\${HOME}"]
    argv = trialcfg.stage_argv(None, words, cfg)
    expected = [str(cfg[f"v{i}"]) for i in range(len(HOSTILE))] + [f"x={cfg.v0}y", "$HOME", "${HOME}"]
    assert argv[3:] == expected  # no shell: $HOME stays text
    assert run(argv) == expected
    assert list(tmp_path.iterdir()) == []


def test_the_line_is_a_shell_line(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"out": str(tmp_path / "o u t"), "n": 3})
    line = f"cd {shlex.quote(str(tmp_path))} && echo ${{n}} | tr 3 4 > ${{out}} && echo $(( ${{n}} + 1 )) >> ${{out}}"
    done = subprocess.run(trialcfg.stage_argv(line, None, cfg), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o u t").read_text() == "4\n4\n"


def test_exit_status_is_the_last_commands_without_pipefail() -> None:
    cfg = OmegaConf.create({"code": 3})
    for line, code in [
        ("exit ${code}", 3),
        ("false | true", 0),
        ("set -o pipefail; false | true", 1),
        ("true && (exit 5)", 5),
    ]:
        assert subprocess.run(trialcfg.stage_argv(line, None, cfg), check=False).returncode == code, line


def test_values_render_as_omegaconf_renders_them_in_a_string(tmp_path: Path) -> None:
    cfg = OmegaConf.create(
        {"l": [1, "a b"], "d": {"k": None}, "f": 1e-3, "b": True, "n": None, "key": "f", "p": "${f}"}
    )
    words = "${l} ${d} ${f} ${b} ${n} ${oc.select:missing,fallback} ${${key}} ${p}"
    got = run(trialcfg.stage_argv(f"{PRINTER} {words}", None, cfg))
    assert got == [OmegaConf.create({"v": f"_{w}"}, parent=cfg).v[1:] for w in words.split()]
    assert got == ["[1, 'a b']", "{'k': None}", "0.001", "True", "None", "fallback", "0.001", "0.001"]


def test_shell_variables_pass_through_to_bash() -> None:
    cfg = OmegaConf.create({"x": 1})
    line = f"{PRINTER} $SF_WORD \\${{SF_WORD}} \"\\${{SF_WORD:-unset}}\" \\${{NO_SUCH_VAR:-dflt}} '$SF_WORD'"
    assert run(trialcfg.stage_argv(line, None, cfg)) == ["word", "word", "word", "dflt", "$SF_WORD"]
    assert trialcfg.shell_line("a=${x} $HOME", cfg) == "a='1' $HOME"


def test_omegaconf_escaped_backslash_then_a_value() -> None:
    # `\\${x}` is a backslash, then the value: in single quotes the backslash is literal.
    cfg = OmegaConf.create({"x": "v'w"})
    assert run(trialcfg.stage_argv(f"{PRINTER} '\\\\${{x}}'", None, cfg)) == ["\\v'w"]
    with pytest.raises(UsageError, match=r"a backslash just before \$\{x\}"):
        trialcfg.stage_argv(f"{PRINTER} \\\\${{x}}", None, cfg)


def test_a_value_in_a_comment_is_not_inserted(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"x": f"a\ntouch {tmp_path}/from-comment"})
    assert run(trialcfg.stage_argv(f"{PRINTER} one # ${{x}}", None, cfg)) == ["one"]
    assert list(tmp_path.iterdir()) == []


def test_here_strings_quote_and_here_documents_refuse(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"x": "a 'b' $(touch x)"})
    read = f"{shlex.quote(sys.executable)} -c 'import sys; print(repr([sys.stdin.read()]))'"
    assert run(trialcfg.stage_argv(f"{read} <<< ${{x}}", None, cfg)) == ["a 'b' $(touch x)\n"]
    with pytest.raises(UsageError, match="here-document"):
        trialcfg.stage_argv("cat <<EOF\n${x}\nEOF", None, cfg)
    assert trialcfg.shell_line("cat <<'EOF'\nit's\nEOF", cfg) == "cat <<'EOF'\nit's\nEOF"  # no value: fine


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("echo ${HOME}", r"cannot resolve \$\{HOME\}: Interpolation key 'HOME' not found; for a shell variable"),
        ("echo ${nope.key}", r"cannot resolve \$\{nope.key\}: Interpolation key 'nope.key' not found$"),
        ("echo ${oc.nosuch:1}", r"cannot resolve \$\{oc.nosuch:1\}: Unsupported interpolation type oc.nosuch"),
        ("echo ${x", r"cannot read the \$\{...\} in"),
        ("echo 'open", "unbalanced quotes .* a ' is never closed; balance the quotes"),
        ('echo "open', 'unbalanced quotes .* a " is never closed'),
        ("echo $(open", r"unbalanced brackets .* a \$\( is never closed"),
        ("echo `date ${n}`", r"inside `...`.*write \$\(...\) instead"),
        ("echo \\${X:-${n}}", r"inside a shell \$\{...\}"),
        ("echo $(( ${s} + 1 ))", r"inside \$\(\(...\)\) .* is 'a\[1\]', not an integer"),
        ("echo $${n}", r"a \$ right before \$\{n\}"),
    ],
)
def test_unusable_templates_fail_in_one_line(template: str, needle: str) -> None:
    cfg = OmegaConf.create({"n": 2, "s": "a[1]"})
    with pytest.raises(UsageError, match=needle) as info:
        trialcfg.stage_argv(template, None, cfg)
    assert "\n" not in str(info.value)


def test_the_shell_variable_hint_names_the_variable() -> None:
    with pytest.raises(UsageError) as info:
        trialcfg.stage_argv("echo ${SLURM_JOB_ID}", None, OmegaConf.create({}))
    assert str(info.value).endswith("; for a shell variable write $SLURM_JOB_ID or \\${SLURM_JOB_ID}")
    with pytest.raises(UsageError, match=r"argv: runs no shell: .* \$\{oc.env:HOME\}"):
        trialcfg.stage_argv(None, ["echo", "${HOME}"], OmegaConf.create({}))


def test_arithmetic_takes_integers() -> None:
    cfg = OmegaConf.create({"n": 20, "m": -3})
    assert subprocess.run(trialcfg.stage_argv("exit $(( ${n} + ${m} ))", None, cfg), check=False).returncode == 17
    assert subprocess.run(trialcfg.stage_argv("(( ${n} > 5 ))", None, cfg), check=False).returncode == 0


def test_command_or_argv_exactly_one_and_bash_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = OmegaConf.create({})
    with pytest.raises(UsageError, match="give exactly one"):
        trialcfg.stage_argv("true", ["true"], cfg)
    with pytest.raises(UsageError, match="give exactly one"):
        trialcfg.stage_argv(None, None, cfg)
    with pytest.raises(UsageError, match="non-empty list"):
        trialcfg.stage_argv(None, [], cfg)
    with pytest.raises(UsageError, match="NUL byte"):
        trialcfg.stage_argv("echo ${x}", None, OmegaConf.create({"x": "a\0b"}))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UsageError, match=r"^bash not found on PATH: .* use argv:$"):
        trialcfg.stage_argv("true", None, cfg)
    assert trialcfg.stage_argv(None, ["python", "x.py"], cfg) == ["python", "x.py"]  # argv needs no bash


def test_the_line_starts_with_the_signal_traps() -> None:
    argv = trialcfg.stage_argv("python train.py", None, OmegaConf.create({}))
    assert argv[2] == trialcfg.SHELL_PREAMBLE + "python train.py"
    assert subprocess.run(["bash", "-n", "-c", argv[2]], check=False).returncode == 0

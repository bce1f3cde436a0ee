"""The README's commands work as written in a fresh clone after `make run`: the project's
own commands are spelled with their .venv/bin/ path (they are not on PATH), and every
`make` target it names exists."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
SCRIPTS = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
TARGETS = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.MULTILINE))
BUILTINS = {"set", ".", "cd", "export", "source"}
DOCUMENTED_ELSEWHERE = {"docker", "jq"}  # Deployment needs Docker; jq only filters output


def console_commands() -> list[str]:
    """Each command typed after a `$ ` prompt, split at `;`, `&&` and `|`."""
    commands = []
    for block in re.findall(r"```console\n(.*?)```", README, re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                typed = line[2:].split("  #")[0]
                commands += [c.strip() for c in re.split(r";|&&|\|", typed) if c.strip()]
    return commands


def inline_commands() -> list[str]:
    """`code` spans in the prose that are commands with arguments."""
    prose = "".join(README.split("```")[0::2])
    spans = re.findall(r"`([^`\n]+)`", prose)
    return [span for span in spans if " " in span]


def program(command: str) -> tuple[str, list[str]]:
    words = [w for w in shlex.split(command) if not re.fullmatch(r"[A-Z_]+=\S*", w)]
    return words[0], words[1:]


def test_readme_examples_use_commands_that_exist_as_written() -> None:
    commands = console_commands()
    assert len(commands) > 10 and any(".venv/bin/mqtt-tail" in c for c in commands)

    for command in commands + inline_commands():
        name, args = program(command)
        assert name not in SCRIPTS, f"{command!r}: not on PATH, write .venv/bin/{name}"
        if name.startswith(".venv/bin/"):
            assert (Path(sys.executable).parent / Path(name).name).exists(), command
        elif name == "make":
            assert args[0] in TARGETS, command
        elif command in inline_commands():
            continue  # prose quotes arguments and fragments as well as commands
        else:
            found = name in BUILTINS | DOCUMENTED_ELSEWHERE or name.startswith("$")
            assert found or shutil.which(name), f"{command!r}: {name} is not installed"

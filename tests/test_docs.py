"""The README stays true: every command is documented with an example, the set-up commands exist."""

from __future__ import annotations

import re

import pytest

from tagger.cli import cli

from .conftest import ROOT

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_a_readme_example(name):
    assert re.search(rf"^vidtag {name} \S", README, re.M), f"no example of `vidtag {name}` in README.md"


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_an_example_in_its_help(name):
    assert f"vidtag {name}" in (cli.commands[name].help or "")


def test_readme_set_up_commands_are_make_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()

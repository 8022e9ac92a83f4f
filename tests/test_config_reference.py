"""The README's configuration reference is the one generated from the config classes."""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel

from pipeline import config_reference


def test_readme_reference_matches_the_config_classes() -> None:
    readme = config_reference.README.read_text(encoding="utf-8")
    assert config_reference.readme_reference(readme) == config_reference.reference_markdown(), (
        "README.md's configuration reference is stale: run "
        "`.venv/bin/python -m pipeline.config_reference --write`"
    )


def test_every_key_of_every_section_is_listed() -> None:
    markdown = config_reference.reference_markdown()
    for _, cls, leave_out in config_reference.SECTIONS:
        names = (
            list(cls.model_fields)
            if issubclass(cls, BaseModel)
            else [field.name for field in dataclasses.fields(cls)]
        )
        for name in set(names) - leave_out:
            assert f"| `{name}` |" in markdown, f"{cls.__name__}.{name} is missing"


def test_descriptions_come_from_the_field_comments() -> None:
    class Example:
        plain: int = 1  # on the line
        # above the line,
        # in two parts
        above: str = "x"
        wrapped: str = (
            "y"  # inside the parentheses
        )
        bare: bool = False

    assert config_reference.field_comments(Example) == {
        "plain": "on the line",
        "above": "above the line, in two parts",
        "wrapped": "inside the parentheses",
        "bare": "",
    }


def test_write_regenerates_between_the_markers() -> None:
    start, end = config_reference.START, config_reference.END
    stale = f"intro\n{start}\nold table\n{end}\nafter\n"
    fresh = config_reference.with_reference(stale)
    assert fresh.startswith(f"intro\n{start}\n") and fresh.endswith(f"{end}\nafter\n")
    assert config_reference.readme_reference(fresh) == config_reference.reference_markdown()

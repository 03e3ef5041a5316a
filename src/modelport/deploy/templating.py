"""The Jinja2 environment of the deploy templates (files under ``deploy/templates/``).

Strict: a variable a template uses but the context lacks is an error, never an empty string.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["TEMPLATES", "render"]

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["q"] = json.dumps
    env.globals["gh"] = lambda expr: "${{ " + expr + " }}"  # a GitHub Actions expression
    return env


def render(template: str, ctx: Mapping[str, Any]) -> str:
    """``template`` (a path under ``templates/``) rendered with ``ctx``."""
    text: str = _environment().get_template(template).render(**ctx)
    return text

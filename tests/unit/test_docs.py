"""The README is a front page, the docs link only inside the repository, and every bound of
the admission layer has its setting and its line in docs/hardening.md."""

from __future__ import annotations

import re
from pathlib import Path

from giftgraph.admission import BOUNDS
from giftgraph.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200


def test_links_stay_inside_the_repository_and_resolve() -> None:
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            assert "://" not in target, f"{page.name} links outside the repository: {target}"
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
            assert path.exists(), f"{page.name}: {target} does not exist"


def test_every_bound_has_a_setting_and_a_line_in_the_docs() -> None:
    hardening = (ROOT / "docs" / "hardening.md").read_text(encoding="utf-8")
    fields = Settings.model_fields
    for bound in BOUNDS:
        assert bound.setting in fields, bound
        assert f"`{bound.name}`" in hardening, f"docs/hardening.md does not list {bound.name}"
        assert f"GIFTGRAPH_{bound.setting.upper()}" in hardening, bound.setting


def test_every_setting_is_in_the_configuration_table() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    missing = [name for name in Settings.model_fields
               if f"GIFTGRAPH_{name.upper()}" not in operations]
    assert not missing, f"docs/operations.md does not list {missing}"

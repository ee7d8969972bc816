"""LICENSE and CITATION.cff ship with the code and agree with pyproject (issue 15)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_the_mit_text_pyproject_declares():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()


def test_citation_names_the_paper_and_the_package_version():
    cff = (ROOT / "CITATION.cff").read_text()
    assert cff.startswith("cff-version: 1.2.0")
    assert 'title: "Learning Task Relatedness in Multi-Task Learning for Images in Context"' in cff
    for family in ("Strezoski", "van Noord", "Worring"):
        assert f"family-names: {family}" in cff
    assert re.search(r"^  year: 2019$", cff, flags=re.MULTILINE)
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(),
                        flags=re.MULTILINE).group(1)
    assert f"version: {version}" in cff and "license: MIT" in cff
    assert "\t" not in cff  # YAML forbids tabs

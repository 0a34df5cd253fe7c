"""Every ```python block in README.md and docs/*.md runs (blocks in one file share a namespace)."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_code_blocks_run(path):
    blocks = BLOCK.findall(path.read_text())
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{path.name}[block {i}]", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message is the point
            raise AssertionError(f"{path.name}, code block {i} failed: {exc!r}\n{code}") from exc


def _renumber(text: str) -> str:
    """Mermaid node ids are object ids: rename them n1, n2, ... l1, ... in order of appearance."""
    ids: dict[str, str] = {}

    def sub(m: re.Match[str]) -> str:
        key = m.group(0)
        if key not in ids:
            ids[key] = f"{key[0]}{sum(1 for k in ids if k[0] == key[0]) + 1}"
        return ids[key]

    return re.sub(r"\b[nlc]\d+\b", sub, text)


def test_math_page_diagram_is_what_to_mermaid_draws():
    page = (ROOT / "docs" / "math.md").read_text()
    namespace: dict = {"__name__": "docs_math"}
    for code in BLOCK.findall(page):
        exec(compile(code, "math.md", "exec"), namespace)
    drawn = re.search(r"^```mermaid\n(.*?)\n```", page, re.S | re.M)
    assert drawn, "docs/math.md has no mermaid block"
    assert _renumber(namespace["diagram"]) == _renumber(drawn.group(1)), (
        "the diagram in docs/math.md is out of date; paste the output of its `diagram` block, "
        "ids renumbered n1, n2, ... (see tests/test_docs.py::_renumber)"
    )

"""The documentation: the README a newcomer reads, the site MkDocs builds, and the architecture it draws."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
import architecture

README = PROJECT_ROOT / "README.md"
ARCHITECTURE = PROJECT_ROOT / "docs" / "architecture.md"
README_MAX_LINES = 200


def build_site(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``project``'s mkdocs.yml: a warning (a broken link or anchor) fails it."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's notice about MkDocs 2, on every build.
        timeout=120,
    )


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = build_site(PROJECT_ROOT, tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()


def test_a_broken_anchor_fails_the_build(tmp_path: Path) -> None:
    """What the strict build is for: a link to a section that does not exist stops it, naming the link."""
    shutil.copytree(PROJECT_ROOT / "docs", tmp_path / "docs")
    shutil.copy(PROJECT_ROOT / "mkdocs.yml", tmp_path)
    with (tmp_path / "docs" / "testing.md").open("a") as page:
        page.write("\nSee [nowhere](privacy.md#no-such-section).\n")
    built = build_site(tmp_path, tmp_path / "site")
    assert built.returncode != 0
    assert "privacy.md#no-such-section" in built.stdout + built.stderr


def test_the_readme_is_short_and_opens_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES
    commands = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert [line.split()[0] for line in commands] == ["./run.sh", "./test.sh"]


def test_every_page_the_readme_links_exists() -> None:
    targets = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", README.read_text())
    assert targets, "the README links its pages"
    assert [target for target in targets if not (PROJECT_ROOT / target).is_file()] == []


def test_the_architecture_diagram_is_the_code_as_it_is() -> None:
    """docs/architecture.md embeds ``python scripts/architecture.py``'s output; regenerate it when this fails."""
    page = ARCHITECTURE.read_text()
    drawn = page.split("<!-- diagram: the output of python scripts/architecture.py -->\n")[1].split("\n<!--")[0]
    assert drawn == architecture.mermaid(architecture.module_imports())


def test_no_module_imports_itself_round_a_cycle() -> None:
    assert architecture.cycles(architecture.module_imports()) == []


@pytest.mark.parametrize("page", [README, ARCHITECTURE])
def test_the_folder_trees_name_every_part_of_the_package(page: Path) -> None:
    """Each folder of fedmnist/ is in the README's tree and the architecture page's, and the page names its modules."""
    text = page.read_text()
    package = PROJECT_ROOT / "fedmnist"
    parts = sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    assert [part for part in parts if f"  {part}/" not in text] == []
    if page == ARCHITECTURE:
        modules = sorted(p.name for p in package.glob("*/*.py") if p.name != "__init__.py" and p.name != "__main__.py")
        assert [module for module in modules if not re.search(rf"(?<![\w.]){re.escape(module)}", text)] == []

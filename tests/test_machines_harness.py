"""The multi-machine harness itself (tests/machines.py): what it refuses, and how the docs' commands are read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import machines
from across_machines import DEPLOYMENT, RAY_CLUSTER, RUNTIMES_PAGE, TLS_PAIR


def test_without_root_the_harness_says_why_in_one_line_and_makes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the tests then skip with: no namespace, bridge or cable made."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(machines.Unavailable, match="^network namespaces need root$"), machines.machines(["server"]):
        pass


def test_a_refused_ip_command_is_unavailable_with_ips_own_words() -> None:
    with pytest.raises(machines.Unavailable, match=r"^ip link set fm-no-such-cable up: .+"):
        machines.ip("link", "set", "fm-no-such-cable", "up")


def test_the_docs_blocks_read_as_their_commands(tmp_path: Path) -> None:
    """Continuation lines joined, comments (whole lines and trailing) dropped; each block the tests run is there."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n### Steps\n\nText.\n\n```bash\n# a comment\nrun --a 1 \\\n    --b 2   # why\n\nnext\n```\n"
    )
    assert machines.documented_commands(page, "### Steps") == ["run --a 1      --b 2", "next"]
    for heading, count in ((TLS_PAIR, 4), (DEPLOYMENT, 8), (RAY_CLUSTER, 4)):
        assert len(machines.documented_commands(RUNTIMES_PAGE, heading)) == count, heading

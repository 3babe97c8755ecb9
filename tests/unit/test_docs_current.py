"""Generated references must match the code they describe."""

import subprocess
import sys
from pathlib import Path

from valetkey.config import settings_reference

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_configuration_reference_is_current() -> None:
    assert (DOCS / "configuration.md").read_text() == settings_reference(), (
        "regenerate: python -m valetkey.config > docs/configuration.md"
    )


def test_cli_reference_is_current(tmp_path: Path) -> None:
    out = tmp_path / "cli.md"
    typer = Path(sys.executable).parent / "typer"
    subprocess.run(
        [
            str(typer),
            "valetkey.cli.main",
            "utils",
            "docs",
            "--name",
            "valetkey",
            "--output",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    assert (DOCS / "cli.md").read_text() == out.read_text(), (
        "regenerate: typer valetkey.cli.main utils docs --name valetkey --output docs/cli.md"
    )

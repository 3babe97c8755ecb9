"""`valetkey sanitize FILE`: what the gateway's sanitizer leaves of a saved email or page.

The body goes to stdout untouched by Rich — it is untrusted, and Rich would read its
`[brackets]` as markup — and the summary to stderr, so the output can be piped.
"""

import sys
from pathlib import Path

import typer

from valetkey.cli.common import JsonOpt, err_console, fail, print_json
from valetkey.gateway.sanitize import sanitize

_HTML_SUFFIXES = frozenset({".html", ".htm"})


def sanitize_command(
    file: Path = typer.Argument(..., help="An HTML or text file; - reads standard input."),
    json: bool = JsonOpt,
    content_type: str | None = typer.Option(
        None,
        "--content-type",
        help="Media type of the file (default: text/html for .html/.htm, else text/plain).",
    ),
) -> None:
    """Remove hidden content (and invisible characters) from an HTML or text file."""
    try:
        raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        fail(f"{file}: {exc.strerror or exc}")
    if content_type is None:
        content_type = "text/html" if file.suffix.lower() in _HTML_SUFFIXES else "text/plain"
    result = sanitize(raw.decode("utf-8", errors="replace"), content_type)
    if json:
        print_json({"removed": result.removed, "header": result.header(), "body": result.body})
        return
    sys.stdout.write(result.body)
    if result.body and not result.body.endswith("\n"):
        sys.stdout.write("\n")
    summary = f"removed: {result.header()}" if result.removed else "nothing hidden found"
    err_console.print(summary, highlight=False, markup=False)

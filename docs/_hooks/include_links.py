"""MkDocs hook: docs/security.md shows SECURITY.md, the one copy of that text.

The page holds only an include line; this hook replaces it with SECURITY.md when the site is
built, and rewrites that file's links, which point from the repository root
(``docs/testing.md``), to point from docs/ (``testing.md``).
"""

import re
from pathlib import Path

_INCLUDE = '--8<-- "SECURITY.md"'
_DOCS_LINK = re.compile(r"\]\(docs/")


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "security.md":
        return markdown
    source = Path(config["config_file_path"]).parent / "SECURITY.md"
    text = _DOCS_LINK.sub("](", source.read_text(encoding="utf-8"))
    return markdown.replace(_INCLUDE, text)

"""Artifacts more than one flow publishes."""

from __future__ import annotations

import base64

from prefect.artifacts import create_markdown_artifact


def svg_artifact(title: str, svg: str, uri: str, key: str) -> None:
    """A markdown artifact that shows `svg` inline and names its file `uri`.

    Inline as a data: URI because the UI cannot read files under the storage root (S3, or
    another machine's disk) and renders no raw <svg> in markdown.
    """
    inline = base64.b64encode(svg.encode()).decode()
    create_markdown_artifact(f"## {title}\n\n![{title.lower()}](data:image/svg+xml;base64,{inline})\n\n"
                             f"File: `{uri}`\n", key=key)

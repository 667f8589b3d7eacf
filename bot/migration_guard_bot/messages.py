"""Making text safe for Slack.

Everything that comes from Proxmox or the service (VM names, tags, node and cluster names, CPU
types, reason messages) passes through here before it reaches a Slack message:

- ``escape`` replaces ``&``, ``<``, ``>`` with the entities Slack asks for, so ``<!channel>``,
  ``<@U123>`` and ``<https://evil|click>`` are shown as text and ping or link nobody;
- ``code`` shows an identifier as inline code, where Slack applies no *bold*, _italic_,
  ~strike~ or link formatting (a backtick inside the name is replaced by a look-alike so it
  cannot close the span);
- ``prose`` neutralises mrkdwn markers in free text from the service (reasons, suggestions).

Every mrkdwn text object we build also sets ``verbatim: true`` so Slack does not auto-link
``@channel``/``@here`` words, channel names or URLs.
"""

from __future__ import annotations

import re

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_ENTITY_RE = re.compile(r"[&<>]")
#: mrkdwn markers -> look-alikes that Slack does not treat as formatting
_MARKERS = {"*": "\u2217", "~": "\u223c", "`": "\u02cb", "_": "\uff3f"}
#: a marker that could open or close formatting: at a word boundary (``sse4_1`` is left alone)
_MARKER_RE = re.compile(r"(?<![A-Za-z0-9])[*_~`]|[*_~`](?![A-Za-z0-9])|[*~`]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

#: Slack's limits (Block Kit): section text 3000, header 150, context element 2000, text 40000
SECTION_MAX = 3000


def escape(value: object) -> str:
    """``&``, ``<``, ``>`` -> entities; control characters dropped. Use for every foreign string."""
    text = _CONTROL_RE.sub("", str(value))
    return _ENTITY_RE.sub(lambda m: _ENTITIES[m.group(0)], text)


def code(value: object) -> str:
    """An identifier (VM name, node, CPU type) as inline code, escaped; never empty."""
    text = _CONTROL_RE.sub("", str(value)).replace("\n", " ").replace("`", "\u02cb").strip()
    return f"`{escape(text)}`" if text else "`?`"


def prose(value: object) -> str:
    """Free text from the service: escaped, mrkdwn markers neutralised, newlines kept."""
    text = _MARKER_RE.sub(lambda m: _MARKERS[m.group(0)], _CONTROL_RE.sub("", str(value)))
    return escape(text)


def plain(value: object) -> str:
    """For ``text`` fallbacks and the console: escaped (Slack still parses <...> there)."""
    return escape(str(value).replace("`", "\u02cb"))


def clip(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters with an ellipsis (without splitting an entity)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"

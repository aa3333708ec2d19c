"""How a part's body is shown on a screen: `body_html`, made when a part is served.

Every answer that carries a part (the REST API, the realtime streams, the widget's API)
adds `body_html` next to the stored `body`, and both screens (the inbox and the widget)
render that field alone, so they show one formatting. It is made when the part is
served, never stored: the stored `body` stays as it was sent (the vendor's API returns
it so), and a change to the allowlist applies to every part already stored.

- A user's text is text: escaped, never parsed as markup (a visitor's `<img onerror>`
  stays those characters).
- What operators, bots and the system write may be HTML (the vendor's replies are): it is
  cleaned by `nh3` to a small allowlist of formatting elements, links keep only an
  `http`, `https` or `mailto` target.
- In both, a bare `http(s)://` address becomes a link. Every link opens in a new tab
  with `rel="noopener noreferrer"`.
"""

from __future__ import annotations

import html
import re

import nh3

from threadline.core.enums import AuthorKind
from threadline.core.model import Part

# Formatting an operator may use; no images, tables, forms or styles (nothing that loads
# from another host or changes the page's layout).
ALLOWED_TAGS = frozenset(
    {
        "a",
        "b",
        "blockquote",
        "br",
        "code",
        "del",
        "div",
        "em",
        "i",
        "li",
        "ol",
        "p",
        "pre",
        "s",
        "span",
        "strong",
        "u",
        "ul",
    }
)
URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer"
# Content dropped with its tag (not kept as text).
_DROPPED_WITH_CONTENT = frozenset({"script", "style", "template", "title", "head"})

# A bare web address in text, up to white space or a character that cannot end one.
_URL = re.compile(r"\bhttps?://[^\s<>\"'`]+", re.IGNORECASE)
# Punctuation that ends a sentence rather than the address it follows.
_TRAILING = ".,;:!?)]}*_~"
# The tags of nh3's output (its attribute values are always double-quoted).
_TAG = re.compile(r"<(?:[^>\"]|\"[^\"]*\")*>")


def _link(url: str) -> str:
    href = html.escape(url, quote=True)
    return f'<a href="{href}" target="_blank" rel="{LINK_REL}">{html.escape(url)}</a>'


def linkify_text(text: str) -> str:
    """Plain text as HTML: escaped, with bare `http(s)://` addresses made links."""
    out: list[str] = []
    at = 0
    for match in _URL.finditer(text):
        url = match.group(0)
        # "(see https://example.com/a)." links the address, not the punctuation after it;
        # a closing bracket stays when the address opened one ("/wiki/Foo_(bar)").
        while url and url[-1] in _TRAILING:
            if url[-1] == ")" and url.count("(") >= url.count(")"):
                break
            url = url[:-1]
        if not url.split("://", 1)[1]:
            continue
        out.append(html.escape(text[at : match.start()]))
        out.append(_link(url))
        at = match.start() + len(url)
    out.append(html.escape(text[at:]))
    return "".join(out)


def clean_html(markup: str) -> str:
    """Operator HTML cleaned to the allowlist, with bare addresses in its text made links."""
    cleaned = nh3.clean(
        markup,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(_DROPPED_WITH_CONTENT),
        attributes={"a": {"href"}},
        url_schemes=set(URL_SCHEMES),
        link_rel=LINK_REL,
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )
    out: list[str] = []
    at = 0
    in_link = 0
    for tag in _TAG.finditer(cleaned):
        text = cleaned[at : tag.start()]
        if text:
            out.append(text if in_link else linkify_text(html.unescape(text)))
        name = tag.group(0)
        if name.startswith("<a ") or name == "<a>":
            in_link += 1
        elif name == "</a>":
            in_link = max(0, in_link - 1)
        out.append(name)
        at = tag.end()
    rest = cleaned[at:]
    if rest:
        out.append(rest if in_link else linkify_text(html.unescape(rest)))
    return "".join(out)


def body_html(part: Part) -> str:
    """The part's body as the screens show it (see the module's docstring)."""
    if not part.body:
        return ""
    if part.author.kind is AuthorKind.USER:
        return linkify_text(part.body)
    return clean_html(part.body)

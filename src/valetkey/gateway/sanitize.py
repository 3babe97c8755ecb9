"""Remove what a person never sees from untrusted HTML and text before an agent reads it.

Emails, calendar invitations and web pages carry prompt injections in content that a mail
client or browser does not show: white-on-white text, `display:none` blocks, zero-size fonts,
off-screen boxes, comments, invisible Unicode. The gateway passes textual responses through
`sanitize` and sends `Sanitized.header()` as `X-ValetKey-Sanitized`
(`display-none=2, comment=1, zero-width=14`). The rule: keep what a client without scripts
paints where a reader can see it; drop the rest and say what was dropped.

Libraries, and why:
- selectolax (Lexbor) builds the tree as a browser does — HTML5 tree construction, foster
  parenting, the comment edge cases — so what sits inside a hiding container in our tree
  sits inside it on screen. lxml's libxml2 builder is not HTML5: it keeps a `<span>` misplaced
  in a `<table>` where a browser fosters it out. Lexbor parses 120 KB in about 1 ms and
  matches complex CSS selectors in C.
- tinycss2 tokenizes CSS as CSS Syntax 3 does (escapes, comments, `!important`) and parses
  every colour form; regular expressions over CSS are what `d\\isplay:/**/none` slips past.
- nh3 (Ammonia) does the final allow-list: scripts, event handlers, `javascript:` URLs,
  `style`, `class`, `title` and `<bdo>` go; text, links, formatting and tables stay.
  Presentational CSS is dropped on purpose: once hidden content is gone it only serves
  tricks we missed, and without it anything missed becomes visible to a human reviewer.

Hiding is judged per element (kinds that descendants cannot undo: `display-none`,
`hidden-attr`, `opacity-zero`, `off-screen`; the element goes) or per text run (inherited
kinds that a descendant can undo: `visibility-hidden`, `tiny-font`, `same-color`; the text
goes, counted once per element that caused it). Hidden elements without text are removed
silently, so spacers and tracking pixels do not fill the header. `same-color` means a WCAG
contrast below 1.1 against the nearest background colour (transparent ink included); a
background colour counts even under an image, since clients block images, and an image
alone makes the backdrop unknown. `aria-hidden="true"` alone keeps content — it is routine
on visible icons and duplicated labels — but it turns weak signals (contrast < 1.5, font
≤ 4px, opacity ≤ 0.2, offsets ≤ -100px) into `hidden-attr`: content hidden from assistive
technology and barely visible on screen has no reader but the agent. Comments count unless
blank; `<script>`, `<style>`, `<template>`, `<noscript>` and `<iframe>` count by tag; `bidi`
also counts `<bdo>` and `unicode-bidi: *-override`, whose reversal the cleaning undoes.
`unicode-tag` counts U+E0000 to U+E007F, which smuggle ASCII invisibly. An HTML document is
returned as the fragment inside `<body>` (the `<head>`, its `<title>` too, is not).

Limits: stylesheets are `<style>` elements only (no `<link>`, no `@import`); rules apply
top-level, in `@supports` and in `@media all|screen`, never in conditional media queries
(responsive emails hide desktop or mobile copies there); `:hover`-like and pseudo-element
selectors (`::first-line`) are skipped, as is CSS nesting; complex selectors are matched
within a time budget; `calc()` and `var()` are not evaluated; text-shadow, filters, masks,
SVG, images of text and overlapping boxes are not modelled; a page revealed by JavaScript
stays hidden. Fail-closed cases return an empty body: markup nested beyond what parses in
bounded time (`too-deep`), CSS that tinycss2 cannot handle and any other fault (`error`).
"""

import functools
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import nh3
import tinycss2
import tinycss2.color4
from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

__all__ = ["Sanitized", "sanitize", "sanitize_html", "sanitize_text"]

_INVISIBLE = (
    (
        "zero-width",
        re.compile(
            "[\u00ad\u034f\u180e\u200b-\u200d\u2060-\u2064\ufeff\ufff9-\ufffb\U000e0100-\U000e01ef]"
        ),
    ),
    ("bidi", re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")),
    ("unicode-tag", re.compile("[\U000e0000-\U000e007f]")),  # ASCII smuggled as tag characters
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_KIND_BY_TAG = {t: t for t in ("script", "style", "template", "noscript", "iframe")}
_UA_HIDDEN = frozenset({"title", "datalist", "noembed", "noframes", "rp", "param"})
_INLINE = _words(
    "a abbr b bdi bdo big br cite code data dfn em font i kbd label mark nobr q s samp "
    "small span strike strong sub sup time tt u var"
)
_TABLE_PARTS = frozenset(
    {"table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption", "colgroup", "col"}
)
_RELEVANT = _words(
    "display mso-hide content-visibility visibility opacity font-size color "
    "-webkit-text-fill-color background-color background-image position float left top "
    "right bottom margin-left margin-top text-indent clip clip-path transform overflow-x "
    "overflow-y height max-height width max-width unicode-bidi"
)
_FONT_KEYWORDS = {
    "xx-small": 9.0, "x-small": 10.0, "small": 13.0, "medium": 16.0, "large": 18.0,
    "x-large": 24.0, "xx-large": 32.0, "xxx-large": 48.0,
}  # fmt: skip
_ABSOLUTE_PX = {  # a bare number is quirks mode's px
    "": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54,
    "mm": 96 / 25.4, "q": 96 / 101.6,
}  # fmt: skip
_PARSED = _RELEVANT | _words("font background margin inset overflow -webkit-clip-path")
_STATIC_PSEUDO = _words(
    "first-child last-child only-child first-of-type last-of-type only-of-type nth-child "
    "nth-last-child nth-of-type nth-last-of-type not is where root empty link any-link"
)
_TINY_FONT_PX = 1.5  # 0, ≤ 1px and ≤ 1pt (1.33px)
_SAME_COLOR_CONTRAST = 1.1  # WCAG ratio; #f5f5f5 on white is 1.09
_FAR_PX = -500.0  # offsets that put a box off the page
_MAX_PARSE_COST = 50_000_000  # Σ open-element depth at each block start tag ≈ 0.2 s of Lexbor
_SELECTOR_BUDGET = 200_000_000  # bytes scanned by complex-selector queries ≈ 0.3 s

_T = TypeVar("_T")
_RGBA = tuple[float, float, float, float]
_RGB = tuple[float, float, float]
_Decl = tuple[str, str, bool]  # property, value (serialized, lower case), !important
_WHITE: _RGB = (1.0, 1.0, 1.0)
_BLACK: _RGBA = (0.0, 0.0, 0.0, 1.0)
_LINK: _RGBA = (0.0, 0.0, 238 / 255, 1.0)


@dataclass(frozen=True)
class Sanitized:
    body: str
    removed: dict[str, int]

    def header(self) -> str:
        """The `X-ValetKey-Sanitized` value: `kind=count` pairs sorted by kind, or ""."""
        return ", ".join(f"{kind}={n}" for kind, n in sorted(self.removed.items()) if n)


def sanitize(body: str, content_type: str) -> Sanitized:
    """HTML (and XHTML) is parsed; any other text loses only its invisible characters,
    which cannot be syntax in JSON, XML or CSV, so the result stays well-formed."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("text/html", "application/xhtml+xml"):
        return sanitize_html(body)
    return sanitize_text(body)


def sanitize_text(text: str) -> Sanitized:
    removed: Counter[str] = Counter()
    return Sanitized(_strip_invisible(text, removed), dict(sorted(removed.items())))


def sanitize_html(html: str) -> Sanitized:
    """Never raises. Markup that Lexbor cannot parse in bounded time, CSS that tinycss2
    cannot handle, or an unforeseen error fail closed: an empty body, the reason as kind."""
    if _parse_cost_exceeded(html):
        return Sanitized("", {"too-deep": 1})
    try:
        return _sanitize_html(html)
    except Exception:  # a filter at a trust boundary fails closed, not with a 500
        return Sanitized("", {"error": 1})


def _sanitize_html(html: str) -> Sanitized:
    tree = LexborHTMLParser(html)
    walker = _Walker(_StyleSheet(tree, _SELECTOR_BUDGET // max(len(html), 1)))
    document = tree.root.parent if tree.root is not None else None
    if document is not None:
        walker.walk(document)
    removed = walker.finish()
    fragment = tree.body.inner_html if tree.body is not None else ""
    body = _strip_invisible(_CLEANER.clean(fragment or ""), removed)
    return Sanitized(body, {kind: n for kind, n in sorted(removed.items()) if n})


_CLEANER = nh3.Cleaner(
    tags=nh3.ALLOWED_TAGS - {"bdo"},  # <bdo dir=rtl> reverses text as U+202E does
    attributes={"*": {"lang"}} | {t: a for t, a in nh3.ALLOWED_ATTRIBUTES.items() if t != "bdo"},
)


def _strip_invisible(text: str, removed: Counter[str]) -> str:
    for kind, pattern in _INVISIBLE:
        text, n = pattern.subn("", text)
        if n:
            removed[kind] += n
    return text


def _meaningful(text: str | None) -> bool:
    """Text a reader could see: not only whitespace and invisible characters."""
    text = (text or "").strip()
    for _, pattern in _INVISIBLE:
        text = pattern.sub("", text).strip()
    return bool(text)


_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)")
_FLAT = _words(
    "area base br col embed hr img input link meta param source track wbr p li dt dd option "
    "optgroup tr td th tbody thead tfoot colgroup caption rb rt rp"
)
_SCOPE_CHECKING = _words(
    "address article aside blockquote center details dialog dir div dl fieldset figcaption "
    "figure footer form h1 h2 h3 h4 h5 h6 header hgroup main menu nav ol pre section "
    "summary table ul"
)


def _parse_cost_exceeded(html: str) -> bool:
    """Lexbor (like html5ever) walks the stack of open elements at each block start tag, so
    100,000 nested `<div>`s take seconds. A scan for tag names — not parsing: it only
    bounds work — estimates that cost before the parser runs."""
    if len(html) < 30_000:  # too few tags to reach the bound
        return False
    depth = cost = 0
    for match in _TAG.finditer(html):
        name = match.group(2).lower()
        if name in _FLAT:
            continue
        if match.group(1):
            depth = max(depth - 1, 0)
            continue
        if name in _SCOPE_CHECKING:
            cost += depth
            if cost > _MAX_PARSE_COST:
                return True
        depth += 1
    return False


# CSS values --------------------------------------------------------------------------------


def _memo(func: Callable[[str], _T]) -> Callable[[str], _T]:
    """An LRU cache over short values only: emails repeat their inline styles, and a
    process-wide cache must not keep megabyte-long hostile attributes alive."""
    cached = functools.lru_cache(maxsize=4096)(func)

    @functools.wraps(func)
    def call(value: str) -> _T:
        return cached(value) if len(value) <= 2048 else func(value)

    return call


@_memo
def _inline(style: str) -> tuple[_Decl, ...]:
    """CSS the parser cannot handle raises, and `sanitize_html` fails closed: ignoring a
    style attribute would reveal whatever its `display:none` hid."""
    return _declarations(
        tinycss2.parse_blocks_contents(style, skip_comments=True, skip_whitespace=True)
    )


def _declarations(nodes: Iterable[Any]) -> tuple[_Decl, ...]:
    out: list[_Decl] = []
    for node in nodes:
        if node.type != "declaration" or node.lower_name not in _PARSED:
            continue
        parts = [
            tinycss2.serialize([t]).lower()
            for t in node.value
            if t.type not in ("whitespace", "comment")
        ]
        if parts:
            out.extend(_expand(node.lower_name, parts, bool(node.important)))
    return tuple(out)


def _expand(name: str, parts: list[str], important: bool) -> list[_Decl]:
    """Shorthands become the longhands the cascade compares."""
    if name == "font":
        size = next((p for p in parts if _is_font_size(p)), None)
        return [("font-size", size, important)] if size else []
    if name == "background":
        image = any(p.startswith("url(") or "gradient(" in p or "image(" in p for p in parts)
        colors = [p for p in parts if isinstance(_color(p), tuple) or p == "currentcolor"]
        return [
            ("background-image", "url" if image else "none", important),
            ("background-color", colors[-1] if colors else "transparent", important),
        ]
    if name == "overflow":
        return [("overflow-x", parts[0], important), ("overflow-y", parts[-1], important)]
    if name in ("margin", "inset"):
        prefix = "margin-" if name == "margin" else ""
        sides = zip(("top", "right", "bottom", "left"), _box(parts), strict=True)
        return [(prefix + s, v, important) for s, v in sides if prefix + s in _RELEVANT]
    name = "clip-path" if name == "-webkit-clip-path" else name
    return [(name, " ".join(parts), important)] if name in _RELEVANT else []


def _box(values: Sequence[_T]) -> tuple[_T, _T, _T, _T]:
    """CSS's one-to-four-value box shorthand as top, right, bottom, left."""
    top = values[0]
    right = values[1] if len(values) > 1 else top
    bottom = values[2] if len(values) > 2 else top
    return top, right, bottom, values[3] if len(values) > 3 else right


def _is_font_size(part: str) -> bool:
    if part in _FONT_KEYWORDS or part in ("smaller", "larger"):
        return True
    dim = _dimension(part)
    return dim is not None and (dim[1] != "" or dim[0] == 0)  # bare numbers are weights


@_memo
def _tokens(value: str) -> tuple[Any, ...]:
    return tuple(
        t
        for t in tinycss2.parse_component_value_list(value)
        if t.type not in ("whitespace", "comment") and not (t.type == "literal" and t == ",")
    )


@_memo
def _dimension(value: str) -> tuple[float, str] | None:
    tokens = _tokens(value)
    if len(tokens) != 1:
        return None
    token = tokens[0]
    if token.type == "dimension":
        return float(token.value), str(token.lower_unit)
    if token.type == "percentage":
        return float(token.value), "%"
    if token.type == "number":
        return float(token.value), ""
    return None


def _px(value: str, font_px: float | None) -> float | None:
    dim = _dimension(value)
    if dim is None:
        return None
    number, unit = dim
    if number == 0:
        return 0.0
    if unit in _ABSOLUTE_PX:
        return number * _ABSOLUTE_PX[unit]
    if unit == "rem":
        return number * 16
    if font_px is not None and unit in ("em", "ex", "ch"):
        return number * font_px * (1 if unit == "em" else 0.5)
    return None


def _font_px(value: str, parent: float | None) -> float | None:
    if value in _FONT_KEYWORDS:
        return _FONT_KEYWORDS[value]
    if value == "initial":
        return 16.0
    if parent is not None and value in ("smaller", "larger"):
        return parent / 1.2 if value == "smaller" else parent * 1.2
    dim = _dimension(value)
    if dim is None or dim[0] < 0:
        return parent  # inherit, calc(), var(), invalid: keep what is inherited
    if dim[0] == 0:
        return 0.0
    if dim[1] == "%":
        return None if parent is None else parent * dim[0] / 100
    px = _px(value, parent)
    return parent if px is None else px


@_memo
def _color(value: str) -> _RGBA | str | None:
    """An sRGB colour with alpha, "currentcolor", or None when not a colour."""
    if value == "currentcolor":
        return value
    if value == "initial":
        return _BLACK
    parsed = tinycss2.color4.parse_color(value)
    if parsed is None or isinstance(parsed, str):
        return None
    r, g, b = (min(max(float(c or 0), 0.0), 1.0) for c in parsed.to("srgb").coordinates)
    return (r, g, b, min(max(float(parsed.alpha), 0.0), 1.0))


def _attr_color(raw: str) -> str | None:
    """HTML's legacy colour attributes (`bgcolor`, `<font color>`) also accept bare hex."""
    value = raw.strip().lower()
    if isinstance(_color(value), tuple):
        return value
    if re.fullmatch(r"[0-9a-f]{3}|[0-9a-f]{6}", value):
        return "#" + value
    return None


def _over(ink: _RGBA, backdrop: _RGB) -> _RGB:
    a = ink[3]
    return (
        ink[0] * a + backdrop[0] * (1 - a),
        ink[1] * a + backdrop[1] * (1 - a),
        ink[2] * a + backdrop[2] * (1 - a),
    )


def _contrast(a: _RGB, b: _RGB) -> float:
    def luminance(c: _RGB) -> float:
        r, g, bl = (x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in c)
        return 0.2126 * r + 0.7152 * g + 0.0722 * bl

    la, lb = luminance(a), luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def _ink_contrast(ink: _RGBA, backdrop: _RGB | None) -> float | None:
    """How far text stands out from what it is painted on; None when that is unknown."""
    if ink[3] <= 0.05:
        return 1.0  # transparent ink is invisible on any backdrop
    if backdrop is None:
        return None
    return _contrast(_over(ink, backdrop), backdrop)


def _far(value: str | None, font_px: float | None, limit: float = _FAR_PX) -> bool:
    if not value:
        return False
    dim = _dimension(value)
    if dim is not None and dim[1] == "%":
        return dim[0] <= -100
    px = _px(value, font_px)
    return px is not None and px <= limit


def _function(value: str | None) -> tuple[str, list[str]] | None:
    tokens = _tokens(value) if value else ()
    if len(tokens) != 1 or tokens[0].type != "function":
        return None
    args = [
        tinycss2.serialize([t]).lower()
        for t in tokens[0].arguments
        if t.type not in ("whitespace", "comment") and not (t.type == "literal" and t == ",")
    ]
    return str(tokens[0].lower_name), args


def _clip_hides(value: str | None) -> bool:
    """`clip: rect(0 0 0 0)` and kin: a clip rectangle with no area."""
    func = _function(value)
    if func is None or func[0] != "rect" or len(func[1]) != 4:
        return False
    top, right, bottom, left = (_px(a, None) for a in func[1])
    width = (1e9 if right is None else right) - (left or 0)
    height = (1e9 if bottom is None else bottom) - (top or 0)
    return width <= 1 or height <= 1


def _clip_path_hides(value: str | None) -> bool:
    func = _function(value)
    if func is None:
        return False
    name, args = func
    if name == "inset" and args:
        args = args[: args.index("round")] if "round" in args else args
        pct = [d[0] if (d := _dimension(a)) and d[1] == "%" else 0.0 for a in args[:4]]
        top, right, bottom, left = _box(pct)
        return top + bottom >= 100 or left + right >= 100
    if name in ("circle", "ellipse"):
        radii = args[: args.index("at")] if "at" in args else args
        return any(_px(r, None) == 0 for r in radii)
    if name == "polygon":
        coords = [a for a in args if a not in ("nonzero", "evenodd")]
        return len(set(zip(coords[0::2], coords[1::2], strict=False))) == 1  # one point
    return False


def _transform_hides(value: str | None, font_px: float | None) -> bool:
    for token in _tokens(value) if value else ():
        if token.type != "function":
            continue
        args = [
            tinycss2.serialize([t]).lower()
            for t in token.arguments
            if t.type not in ("whitespace", "comment") and not (t.type == "literal" and t == ",")
        ]
        name = token.lower_name
        if name in ("scale", "scalex", "scaley", "scale3d") and any(
            (d := _dimension(a)) is not None and d[0] == 0 for a in args
        ):
            return True
        if name in ("translate", "translatex", "translatey", "translate3d") and any(
            _far(a, font_px) for a in args
        ):
            return True
    return False


# Stylesheets -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    specificity: tuple[int, int, int]
    order: int
    declarations: tuple[_Decl, ...]
    tag: str | None = None
    id: str | None = None
    classes: frozenset[str] = frozenset()

    def matches(self, tag: str, element_id: str, classes: set[str]) -> bool:
        return (
            (self.tag is None or self.tag == tag)
            and (self.id is None or self.id == element_id)
            and self.classes <= classes
        )


class _StyleSheet:
    """The rules of the document's `<style>` elements. Compound selectors (`p.x#y`) are
    indexed by id, class or tag and matched during the walk; other selectors are matched
    by Lexbor, while the query budget lasts."""

    def __init__(self, tree: LexborHTMLParser, max_queries: int) -> None:
        self._indexed: dict[str, list[_Rule]] = defaultdict(list)
        self._matched: dict[int, list[_Rule]] = defaultdict(list)
        self._tree = tree
        self._queries = max_queries
        self.empty = True
        order = 0
        for element in tree.css("style"):
            if not _applies(element.attributes.get("media") or "all"):
                continue
            rules = tinycss2.parse_stylesheet(
                element.text(deep=True), skip_comments=True, skip_whitespace=True
            )
            for prelude, declarations in _qualified(rules):
                order += 1
                self._add(prelude, declarations, order)

    def _add(self, prelude: list[Any], declarations: tuple[_Decl, ...], order: int) -> None:
        if not declarations:
            return
        self.empty = False
        for selector in _split(prelude):
            compound = _compound(selector)
            if compound is not None:
                tag, element_id, classes = compound
                specificity = (int(bool(element_id)), len(classes), int(bool(tag)))
                rule = _Rule(specificity, order, declarations, tag, element_id, frozenset(classes))
                key = f"#{element_id}" if element_id else f".{min(classes)}" if classes else tag
                self._indexed[key or "*"].append(rule)
            elif _static(selector) and self._queries > 0:
                self._queries -= 1
                try:
                    nodes = self._tree.css(tinycss2.serialize(selector))
                except SelectolaxError:
                    continue
                rule = _Rule(_specificity(selector), order, declarations)
                for node in nodes:
                    self._matched[node.mem_id].append(rule)

    def rules_for(self, node: LexborNode, tag: str, attrs: dict[str, str | None]) -> list[_Rule]:
        element_id = (attrs.get("id") or "").lower()
        classes = set((attrs.get("class") or "").lower().split())
        keys = ["*", tag, *(f".{c}" for c in classes)] + ([f"#{element_id}"] if element_id else [])
        found = [
            r for k in keys for r in self._indexed.get(k, ()) if r.matches(tag, element_id, classes)
        ]
        return found + self._matched.get(node.mem_id, [])


def _applies(media: str) -> bool:
    """Media queries that hold for every screen; conditional ones are skipped (see limits)."""
    tokens = _tokens(media.lower())
    return all(t.type == "ident" and t.lower_value in ("all", "screen", "only") for t in tokens)


def _qualified(rules: Iterable[Any]) -> Iterator[tuple[list[Any], tuple[_Decl, ...]]]:
    for rule in rules:
        if rule.type == "qualified-rule":
            contents = tinycss2.parse_blocks_contents(
                rule.content, skip_comments=True, skip_whitespace=True
            )
            yield rule.prelude, _declarations(contents)
        elif rule.type == "at-rule" and rule.content is not None:
            media = rule.lower_at_keyword == "media" and _applies(tinycss2.serialize(rule.prelude))
            if media or rule.lower_at_keyword == "supports":
                inner = tinycss2.parse_rule_list(
                    rule.content, skip_comments=True, skip_whitespace=True
                )
                yield from _qualified(inner)


def _split(prelude: list[Any]) -> Iterator[list[Any]]:
    selector: list[Any] = []
    for token in [*prelude, None]:
        if token is None or (token.type == "literal" and token == ","):
            while selector and selector[-1].type == "whitespace":
                selector.pop()
            while selector and selector[0].type == "whitespace":
                selector.pop(0)
            if selector:
                yield selector
            selector = []
        elif token.type != "comment":
            selector.append(token)


def _compound(selector: list[Any]) -> tuple[str | None, str | None, set[str]] | None:
    """`tag`, `*`, `.a.b`, `#id` and their combinations; None for anything else."""
    tag: str | None = None
    element_id: str | None = None
    classes: set[str] = set()
    i = 0
    if selector[0].type == "ident":
        tag, i = selector[0].lower_value, 1
    elif selector[0].type == "literal" and selector[0] == "*":
        i = 1
    while i < len(selector):
        token = selector[i]
        if token.type == "hash" and token.is_identifier and element_id is None:
            element_id, i = token.value.lower(), i + 1
        elif token == "." and i + 1 < len(selector) and selector[i + 1].type == "ident":
            classes.add(selector[i + 1].value.lower())
            i += 2
        else:
            return None
    return tag, element_id, classes


def _static(tokens: Iterable[Any]) -> bool:
    """No pseudo-element and no state-dependent pseudo-class (`:hover`, `:checked`)."""
    previous = None
    for token in tokens:
        if previous is not None and previous.type == "literal" and previous == ":":
            if token.type == "literal" and token == ":":
                return False
            name = (
                token.lower_name if token.type == "function" else getattr(token, "lower_value", "")
            )
            if name not in _STATIC_PSEUDO:
                return False
        if token.type in ("function", "[] block", "() block") and not _static(
            token.arguments if token.type == "function" else token.content
        ):
            return False
        previous = token
    return True


def _specificity(selector: list[Any]) -> tuple[int, int, int]:
    ids = classes = types = 0
    previous = None
    for token in selector:
        if token.type == "hash":
            ids += 1
        elif token.type == "[] block" or (
            token.type in ("ident", "function") and previous in (".", ":")
        ):
            classes += 1
        elif token.type == "ident":
            types += 1
        previous = token if token.type == "literal" else None
    return ids, classes, types


# The walk ----------------------------------------------------------------------------------


class _State(NamedTuple):
    """What an element passes to its descendants; the last three name the element that
    made text invisible (by `mem_id`), so a run is counted once however many nodes it spans."""

    color: _RGBA
    fill: _RGBA | None  # -webkit-text-fill-color paints over `color`
    backdrop: _RGB | None  # None: an image may be behind the text
    font_px: float | None  # None: unknown (vw, unknown units)
    opacity: float
    visibility: int | None
    tiny: int | None
    same: int | None


_BIDI_OVERRIDES = frozenset({"bidi-override", "isolate-override"})
_PAINT = frozenset({"color", "-webkit-text-fill-color", "background-color"})
_ROOT = _State(_BLACK, None, _WHITE, 16.0, 1.0, None, None, None)


class _Walker:
    def __init__(self, sheet: _StyleSheet) -> None:
        self._sheet = sheet
        self._removed: Counter[str] = Counter()
        self._causes: dict[str, set[int]] = defaultdict(set)
        self._doomed: list[LexborNode] = []

    def finish(self) -> Counter[str]:
        for node in self._doomed:
            node.decompose()
        for kind, causes in self._causes.items():
            self._removed[kind] += len(causes)
        return self._removed

    def walk(self, document: LexborNode) -> None:
        stack = [(document, _ROOT)]  # iterative: hostile nesting must not hit the recursion limit
        while stack:
            parent, state = stack.pop()
            for node in parent.iter(include_text=True):
                if node.is_text_node:
                    self._text(node, state)
                elif node.is_element_node:
                    child = self._element(node, state)
                    if child is not None:
                        stack.append((node, child))
                elif node.tag != "-doctype":  # comments, and processing instructions
                    text = node.comment_content if node.is_comment_node else node.html
                    self._drop(node, "comment", text)

    def _drop(self, node: LexborNode, kind: str, text: str | None) -> None:
        self._doomed.append(node)
        if _meaningful(text):
            self._removed[kind] += 1

    def _drop_element(self, node: LexborNode, kind: str) -> None:
        text = node.text(deep=True)
        if not _meaningful(text):  # a template's content is outside the tree
            text = "".join(f.text(deep=True) for f in node.template_fragments())
        self._drop(node, kind, text)

    def _text(self, node: LexborNode, state: _State) -> None:
        if state.visibility is not None:
            kind, cause = "visibility-hidden", state.visibility
        elif state.tiny is not None:
            kind, cause = "tiny-font", state.tiny
        elif state.same is not None:
            kind, cause = "same-color", state.same
        else:
            return
        if _meaningful(node.text_content):
            self._doomed.append(node)
            self._causes[kind].add(cause)

    def _element(self, node: LexborNode, parent: _State) -> _State | None:
        """The state for the element's children, or None when the element was dropped."""
        tag = node.tag or ""
        if tag in _KIND_BY_TAG:
            self._drop_element(node, _KIND_BY_TAG[tag])
            return None
        if tag == "head":  # never rendered nor returned; report what it carried
            for child in node.iter(include_text=True):
                if child.tag in _KIND_BY_TAG:
                    self._drop_element(child, _KIND_BY_TAG[child.tag or ""])
                elif child.is_comment_node:
                    self._drop(child, "comment", child.comment_content)
            return None
        attrs = node.attributes
        decls = self._cascade(node, tag, attrs)
        paints = decls or tag in ("a", "mark")
        state = _paint(node.mem_id, tag, attrs, decls, parent) if paints else parent
        kind = _hidden(tag, attrs, decls, state)
        if kind is not None:
            self._drop_element(node, kind)
            return None
        overrides = tag == "bdo" or decls.get("unicode-bidi") in _BIDI_OVERRIDES
        if overrides and _meaningful(node.text(deep=True)):
            self._removed["bidi"] += 1  # the reversal goes with <bdo> and `style`
        return state

    def _cascade(self, node: LexborNode, tag: str, attrs: dict[str, str | None]) -> dict[str, str]:
        """The winning value of each relevant property: !important first, then inline
        over stylesheet, then specificity, then order; presentational hints lose to all."""
        ranked: list[tuple[tuple[bool, bool, tuple[int, int, int], int], str, str]] = []
        for name, value in _hints(tag, attrs):
            ranked.append(((False, False, (-1, -1, -1), 0), name, value))
        if not self._sheet.empty:
            for rule in self._sheet.rules_for(node, tag, attrs):
                for name, value, important in rule.declarations:
                    ranked.append(((important, False, rule.specificity, rule.order), name, value))
        style = attrs.get("style")
        if style:
            for i, (name, value, important) in enumerate(_inline(style)):
                ranked.append(((important, True, (0, 0, 0), i), name, value))
        if not ranked:
            return {}
        ranked.sort(key=lambda entry: entry[0])
        return {name: value for _, name, value in ranked}


_COLOR_HINTS = (
    ("bgcolor", "background-color", None),
    ("color", "color", ("font",)),
    ("text", "color", ("body",)),
)


def _hints(tag: str, attrs: dict[str, str | None]) -> Iterator[tuple[str, str]]:
    """HTML's presentational attributes, as the CSS they map to."""
    for attr, prop, tags in _COLOR_HINTS:
        raw = attrs.get(attr)
        value = _attr_color(raw) if raw and (tags is None or tag in tags) else None
        if value:
            yield prop, value
    if attrs.get("background") and tag in ("body", "table", "td", "th"):
        yield "background-image", "url"


def _paint(
    eid: int, tag: str, attrs: dict[str, str | None], decls: dict[str, str], parent: _State
) -> _State:
    color = parent.color
    declared = _color(decls["color"]) if "color" in decls else None
    if isinstance(declared, tuple):
        color = declared
    elif tag == "a" and "href" in attrs and "color" not in decls:
        color = _LINK
    elif tag == "mark" and "color" not in decls:
        color = _BLACK
    fill = parent.fill
    if "-webkit-text-fill-color" in decls:
        declared = _color(decls["-webkit-text-fill-color"])
        fill = declared if isinstance(declared, tuple) else None

    # A background colour is the backdrop even under an image: clients block images by
    # default, and a transparent image would otherwise be a free pass. An image without
    # a colour makes the backdrop unknown.
    backdrop = parent.backdrop
    bg = _color(decls.get("background-color", "yellow" if tag == "mark" else "transparent"))
    bg = color if bg == "currentcolor" else bg
    if isinstance(bg, tuple) and bg[3] > 0:
        backdrop = bg[:3] if bg[3] >= 1 else None if backdrop is None else _over(bg, backdrop)
    elif decls.get("background-image", "none") not in ("none", "initial", "inherit", "unset"):
        backdrop = None

    same = parent.same
    if (color, fill, backdrop) != parent[:3] or not _PAINT.isdisjoint(decls):
        contrast = _ink_contrast(fill or color, backdrop)
        same = eid if contrast is not None and contrast < _SAME_COLOR_CONTRAST else None

    visibility = parent.visibility
    if decls.get("visibility") in ("hidden", "collapse"):
        visibility = eid
    elif decls.get("visibility") == "visible":
        visibility = None

    font_px, tiny = parent.font_px, parent.tiny
    if "font-size" in decls:
        font_px = _font_px(decls["font-size"], parent.font_px)
        tiny = eid if font_px is not None and font_px < _TINY_FONT_PX else None

    opacity = parent.opacity
    dim = _dimension(decls["opacity"]) if "opacity" in decls else None
    if dim is not None:
        opacity *= min(max(dim[0] / 100 if dim[1] == "%" else dim[0], 0.0), 1.0)
    return _State(color, fill, backdrop, font_px, opacity, visibility, tiny, same)


def _hidden(
    tag: str, attrs: dict[str, str | None], decls: dict[str, str], state: _State
) -> str | None:
    """The kind of hiding that removes the element and everything in it, if any."""
    display = decls.get("display")
    if display == "none" or decls.get("mso-hide") == "all":
        return "display-none"
    if decls.get("content-visibility") == "hidden":
        return "display-none"
    if display is None and "hidden" in attrs:  # author CSS `display:block` would reveal it
        return "hidden-attr"
    if display is None and (tag in _UA_HIDDEN or (tag == "dialog" and "open" not in attrs)):
        return "display-none"
    if state.opacity < 0.1:
        return "opacity-zero"
    if _off_screen(tag, decls, state.font_px):
        return "off-screen"
    if (attrs.get("aria-hidden") or "").strip().lower() == "true" and _faint(decls, state):
        return "hidden-attr"
    return None


def _off_screen(tag: str, decls: dict[str, str], font_px: float | None) -> bool:
    position = decls.get("position")
    if position in ("absolute", "fixed", "relative") and any(
        _far(decls.get(side), font_px) for side in ("left", "top", "right", "bottom")
    ):
        return True
    if _far(decls.get("margin-left"), font_px) or _far(decls.get("margin-top"), font_px):
        return True
    if position in ("absolute", "fixed") and _clip_hides(decls.get("clip")):
        return True
    if _clip_path_hides(decls.get("clip-path")):
        return True
    display = decls.get("display")
    boxed = position in ("absolute", "fixed") or decls.get("float") in ("left", "right")
    if not boxed:
        boxed = display not in ("inline", "contents") if display else tag not in _INLINE
    if not boxed:
        return False  # inline boxes ignore sizes, text-indent and transforms
    if _far(decls.get("text-indent"), font_px) or _transform_hides(decls.get("transform"), font_px):
        return True
    clipped = {decls.get("overflow-x"), decls.get("overflow-y")} & {"hidden", "clip"}
    if not clipped or (display is None and tag in _TABLE_PARTS):
        return False  # table cells grow to fit their content
    sizes = (
        _px(decls[p], font_px) for p in ("height", "max-height", "width", "max-width") if p in decls
    )
    return any(size is not None and size <= 1 for size in sizes)


def _faint(decls: dict[str, str], state: _State) -> bool:
    """Signals too weak alone, enough with `aria-hidden="true"` (see the module docstring)."""
    contrast = _ink_contrast(state.fill or state.color, state.backdrop)
    return (
        state.opacity <= 0.2
        or (state.font_px is not None and state.font_px <= 4)
        or (contrast is not None and contrast < 1.5)
        or any(
            _far(decls.get(s), state.font_px, -100.0) for s in ("left", "top", "right", "bottom")
        )
    )

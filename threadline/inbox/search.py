"""Full-text search over part bodies, combined with any inbox view.

What matches: the query's words (runs of letters and digits, any case). A part matches
when it holds every word: a word of three characters or more anywhere, inside other words
too ("voice" finds "invoice"); a shorter word only as a whole word ("ok" does not find
"token"). A conversation matches when one of its parts with a body does (notes included:
only operators search); it is shown with a highlighted snippet of its newest matching part.
Results are the view's conversations, in the view's order (newest `last_update` first),
with the view's keyset pagination.

Indexes. PostgreSQL: a GIN `tsvector` of the body's words; a long word (a piece of the
body's words) is first looked up in the list of words (threadline.inbox.words), and the
parts holding one of the words that contain it come from the `tsvector` index; when the
list cannot answer, the body's `pg_trgm` GIN index does (`ILIKE '%word%'`). SQLite: the FTS5 tables
`parts_trigram` and `parts_words`, external-content over the parts, kept by triggers.
Erasing a conversation empties its bodies in the erasing transaction, which takes them out
of every index at once.

How a page is found. Walking the view in order and testing each conversation's parts is
fast when matches are dense (a common word) and slow when they are rare; asking the text
index for every matching part is the reverse. So a page first walks a bounded stretch of
the view; when that stretch holds enough matches, the page is complete (the first matches
in view order are inside it). Otherwise the text index gives the matching conversations,
and the view keeps those.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Integer,
    MetaData,
    Select,
    Table,
    Text,
    cast,
    exists,
    false,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.conversations.queries import PageRequest
from threadline.conversations.repository import state_from_row
from threadline.core.errors import InvalidParameter
from threadline.core.model import ConversationState
from threadline.db.schema import conversation_parts as parts_t
from threadline.inbox import words as words_list
from threadline.inbox.views import (
    SORT_COLUMNS,
    SORT_ID,
    SORT_UPDATE,
    MergedKeyset,
    Source,
    View,
    source,
)

MAX_QUERY_CHARS = 200
MAX_TERMS = 8
# Words this long are found inside other words (trigram indexes need three characters).
INSIDE_WORDS = words_list.SHORTEST
# A page first walks this many conversations of the view; when that holds some matches
# but not enough, it walks as far as their density says, up to the second number; past
# that (or with no match in the first stretch), the text index answers. Testing a
# conversation's parts costs about what the text index spends on a few matching parts, so
# a walk longer than a few thousand conversations is slower than the index (measured on
# a million conversations: 400 conversations walked in ~6 ms).
WALKS = (400, 3_000)
SNIPPET_CHARS = 160

_TERM = re.compile(r"[^\W_]+")
# PostgreSQL: the expression of the index ix_conversation_parts_words; its words are runs
# of letters and digits, as on SQLite and in `parse_query`.
_PG_WORDS: ColumnElement[Any] = literal_column(
    words_list.TSVECTOR_OF.format(body="conversation_parts.body")
)
# The same body, as an expression no index has: testing one part must not make the
# planner read a text index for every part of the database.
_PG_BODY_AS_IS: ColumnElement[str] = literal_column("(conversation_parts.body || '')")


@dataclass(frozen=True, slots=True)
class Query:
    """The words to find: `inside` ones anywhere, `whole` ones as whole words."""

    inside: tuple[str, ...]
    whole: tuple[str, ...]

    @property
    def terms(self) -> tuple[str, ...]:
        return self.inside + self.whole


def parse_query(q: str) -> Query:
    """The query's words, lower-cased, each once; a query without any is refused."""
    if len(q) > MAX_QUERY_CHARS:
        raise InvalidParameter("q", f"at most {MAX_QUERY_CHARS} characters")
    terms = list(dict.fromkeys(t.lower() for t in _TERM.findall(q)))
    if not terms:
        raise InvalidParameter("q", "must hold a word (letters or digits)")
    if len(terms) > MAX_TERMS:
        raise InvalidParameter("q", f"at most {MAX_TERMS} words")
    return Query(
        inside=tuple(t for t in terms if len(t) >= INSIDE_WORDS),
        whole=tuple(t for t in terms if len(t) < INSIDE_WORDS),
    )


# The SQLite FTS5 tables, for building queries (they are not part of the schema metadata).
_fts_metadata = MetaData()
_FTS = {
    name: Table(name, _fts_metadata, Column("rowid", Integer), Column("body", Text))
    for name in ("parts_trigram", "parts_words")
}


def _fts_match(name: str, terms: Sequence[str]) -> ColumnElement[bool]:
    # Terms are letters and digits only: quoting each makes it a plain FTS5 string.
    return literal_column(name).match(" AND ".join(f'"{t}"' for t in terms))


class Matcher:
    """The SQL that finds matching parts, per database.

    `holding`: PostgreSQL, for each long word, the listed words that contain it, looked up
    by `look_up_words` before the text indexes are asked (a page the view walk answers
    needs none); a long word without an entry is looked up in the body's trigram index.
    """

    def __init__(self, dialect: str, query: Query) -> None:
        self.query = query
        self.postgres = dialect == "postgresql"
        self.holding: dict[str, tuple[str, ...]] = {}
        self._looked_up = not self.postgres

    async def look_up_words(self, conn: AsyncConnection) -> None:
        """PostgreSQL: find the listed words holding each long word (once)."""
        if self._looked_up:
            return
        for piece in self.query.inside:
            found = await words_list.holding(conn, piece)
            if found.words is not None:
                self.holding[piece] = found.words
        self._looked_up = True

    def _fts_tables(self) -> list[tuple[str, tuple[str, ...]]]:
        return [
            (name, terms)
            for name, terms in (
                ("parts_trigram", self.query.inside),
                ("parts_words", self.query.whole),
            )
            if terms
        ]

    def part(self, *, indexed: bool = False) -> list[ColumnElement[bool]]:
        """Conditions on one `conversation_parts` row: this part matches. `indexed`: in the
        form the text indexes answer (to find every matching part), else in a form tested
        on the row itself (to test the parts of a few conversations)."""
        p = parts_t.c
        where: list[ColumnElement[bool]] = [p.body != ""]
        if self.postgres:
            body = p.body if indexed else _PG_BODY_AS_IS
            listed = self.holding if indexed else {}
            where.extend(body.ilike(f"%{t}%") for t in self.query.inside if t not in listed)
            if indexed and (self.query.whole or listed):
                if any(not words for words in listed.values()):
                    return [false()]
                # One tsquery, so that one index scan answers: the whole words, and for
                # each long word any listed word containing it.
                tsquery: ColumnElement[Any] | None = None
                if self.query.whole:
                    tsquery = func.to_tsquery(
                        literal_column("'simple'"), " & ".join(self.query.whole)
                    )
                if listed:
                    alternatives = " & ".join(
                        "(" + " | ".join(map(words_list.lexeme, words)) + ")"
                        for words in listed.values()
                    )
                    pieces = cast(literal(alternatives, Text), TSQUERY)
                    tsquery = pieces if tsquery is None else tsquery.op("&&")(pieces)
                where.append(_PG_WORDS.op("@@")(tsquery))
            elif self.query.whole:
                where.extend(
                    body.op("~*")(f"(^|[^[:alnum:]]){t}($|[^[:alnum:]])") for t in self.query.whole
                )
            return where
        # SQLite: a word of ASCII letters and digits is found inside the body by LIKE, which
        # ignores ASCII case, on the row itself. Other words go to FTS5, whose matching
        # rowids are read once per statement (FTS5 answers a MATCH with a rowid equality by
        # reading the whole doclist anyway).
        inside = [t for t in self.query.inside if not t.isascii()]
        where.extend(p.body.like(f"%{t}%") for t in self.query.inside if t.isascii())
        for name, terms in (("parts_trigram", inside), ("parts_words", self.query.whole)):
            if terms:
                fts = _FTS[name]
                where.append(p.id.in_(select(fts.c.rowid).where(_fts_match(name, terms))))
        return where

    def conversation(self, conversation_id: Any) -> ColumnElement[bool]:
        """The conversation `conversation_id` has a matching part (tested part by part)."""
        return exists().where(parts_t.c.conversation_id == conversation_id, *self.part())

    def matching_conversations(self) -> Select[Any]:
        """Every conversation with a matching part, from the text indexes."""
        p = parts_t.c
        if self.postgres:
            return select(p.conversation_id).where(*self.part(indexed=True)).distinct()
        tables = self._fts_tables()
        first_name, first_terms = tables[0]
        first = _FTS[first_name]
        query = (
            select(p.conversation_id)
            .select_from(first.join(parts_t, p.id == first.c.rowid))
            .where(_fts_match(first_name, first_terms))
        )
        for name, terms in tables[1:]:
            fts = _FTS[name]
            query = query.where(exists().where(fts.c.rowid == p.id, _fts_match(name, terms)))
        return query.distinct()


class _SearchKeyset(MergedKeyset):
    """The view's keyset, fetching only conversations that match (see the module's doc)."""

    def __init__(self, conn: AsyncConnection, src: Source, matcher: Matcher) -> None:
        super().__init__(conn, src)
        self.matcher = matcher

    async def _walk(
        self, where: ColumnElement[bool] | None, descending: bool, limit: int, stretch: int
    ) -> tuple[list[Any], bool]:
        """The first `limit` matches among the next `stretch` conversations of the view,
        and whether they are final: `limit` found, or the view ends within the stretch."""
        inner = self.merged(where, descending, stretch).subquery("stretch")
        outer = (
            select(inner)
            .where(self.matcher.conversation(inner.c[SORT_ID]))
            .order_by(*self._order(descending, (inner.c[SORT_UPDATE], inner.c[SORT_ID])))
            .limit(limit)
        )
        rows = await self.rows(outer, descending)
        if len(rows) >= limit:
            return rows, True
        size = select(func.count()).select_from(self.merged(where, descending, stretch).subquery())
        return rows, int((await self.conn.execute(size)).scalar_one()) < stretch

    async def _fetch(
        self, where: ColumnElement[bool] | None, descending: bool, limit: int | None
    ) -> list[Any]:
        if limit is not None:
            first, longest = WALKS
            rows, final = await self._walk(where, descending, limit, first)
            if final:
                return rows
            if rows:
                # As dense as the first stretch, how far must the walk go? Far enough
                # (with a margin), unless that is too far: then the text index answers.
                needed = math.ceil(limit * first / len(rows) * 1.5)
                if needed <= longest:
                    rows, final = await self._walk(where, descending, limit, needed)
                    if final:
                        return rows
        await self.matcher.look_up_words(self.conn)
        matching = self.matcher.matching_conversations().cte("matching").prefix_with("MATERIALIZED")
        among = SORT_COLUMNS[1].in_(select(matching.c.conversation_id))
        return await self.rows(self.merged(where, descending, limit, among), descending)


@dataclass(slots=True)
class Hit:
    """A matching conversation and the newest of its matching parts."""

    state: ConversationState
    part_id: int
    snippet: str


@dataclass(slots=True)
class SearchPage:
    hits: list[Hit]
    next_before: Any = None
    next_after: Any = None
    next_after_v1: datetime | None = None


async def _newest_matching_parts(
    conn: AsyncConnection, matcher: Matcher, conversation_ids: Sequence[int]
) -> dict[int, tuple[int, str]]:
    if not conversation_ids:
        return {}
    p = parts_t.c
    query = (
        select(p.conversation_id, p.id, p.body)
        .where(p.conversation_id.in_(list(conversation_ids)), *matcher.part())
        .order_by(p.id)
    )
    return {row.conversation_id: (row.id, row.body) for row in await conn.execute(query)}


async def page(
    conn: AsyncConnection,
    app_id: int,
    query: Query,
    view: View,
    now: datetime,
    request: PageRequest | None = None,
    v1: tuple[datetime | None, int] | None = None,
) -> SearchPage:
    """One page of the view's conversations that match `query`."""
    matcher = Matcher(conn.dialect.name, query)
    keyset = _SearchKeyset(conn, source(app_id, view, now, conn.dialect.name), matcher)
    if v1 is not None:
        rows, next_after_v1 = await keyset.page_v1(*v1)
        result = SearchPage([], next_after_v1=next_after_v1)
    else:
        assert request is not None
        found = await keyset.page(request)
        rows = found.rows
        result = SearchPage([], found.next_before, found.next_after)
    states = [state_from_row(r) for r in rows]
    parts = await _newest_matching_parts(conn, matcher, [s.id for s in states])
    for state in states:
        part_id, body = parts[state.id]
        result.hits.append(Hit(state, part_id, snippet(body, query)))
    return result


# ---------------------------------------------------------------------------
# Snippets

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def _spans(plain: str, query: Query) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for term in query.inside:
        spans.extend(m.span() for m in re.finditer(re.escape(term), plain, re.IGNORECASE))
    for term in query.whole:
        pattern = rf"(?<![^\W_]){re.escape(term)}(?![^\W_])"
        spans.extend(m.span() for m in re.finditer(pattern, plain, re.IGNORECASE))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def snippet(body: str, query: Query, width: int = SNIPPET_CHARS) -> str:
    """A short piece of the body around its first match, as HTML: the text escaped, every
    match in `<mark>`. HTML tags of the body are left out (the text is what matters)."""
    plain = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", body))).strip()
    spans = _spans(plain, query)
    first = spans[0][0] if spans else 0
    start = max(0, first - width // 3)
    if start:
        space = plain.rfind(" ", 0, start + 1)
        start = space + 1 if space >= first - width // 2 and space >= 0 else start
    end = min(len(plain), start + width)
    if end < len(plain):
        space = plain.rfind(" ", start, end)
        end = space if space > first else end
    out = ["\u2026" if start else ""]
    cursor = start
    for s, e in spans:
        if e <= start or s >= end:
            continue
        s, e = max(s, start), min(e, end)
        out.append(html.escape(plain[cursor:s]))
        out.append(f"<mark>{html.escape(plain[s:e])}</mark>")
        cursor = e
    out.append(html.escape(plain[cursor:end]))
    out.append("\u2026" if end < len(plain) else "")
    return "".join(out)

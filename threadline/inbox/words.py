"""PostgreSQL's list of the words in part bodies (`search_words`, revision 0010).

A search for a piece of a word ("voic") would otherwise ask the bodies' trigram index,
whose work grows with the number of parts sharing the piece's trigrams, not with the
number of matches. The word list is small (the distinct words, not their occurrences):
its own trigram index finds the few words that contain the piece, and the whole-word
index finds their parts. A trigger adds the words of each new part; erasing a
conversation takes out the words that no other part has (`forget`). `threadline check`
compares the list with the bodies (`drift`) and puts back missing words (`restore`).

A word of the body is a run of letters and digits, lower-cased, as the whole-word index
has it; a piece of three characters or more made of letters and digits lies inside one
such word, so "a part contains the piece" and "a part has a word that contains it" are
the same. Only words the whole-word index holds are listed: PostgreSQL leaves words
over 2,047 bytes out of a `tsvector`.
"""

# SQL text here is built from this module's own names; values are bound (those the planner
# must see to choose a plan are rendered by SQLAlchemy as quoted literals).
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Text, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

# A piece held by more words than this is looked up in the bodies' trigram index instead
# (a query of thousands of alternatives costs more than the trigram lookup).
MAX_WORDS = 2_000
# ix_conversation_parts_words's expression, on a body named `{body}` (revision 0005): runs
# of anything but letters and digits become spaces, so the words are runs of letters and
# digits. A query must use exactly this text, or the index is not used.
TSVECTOR_OF = (
    "to_tsvector('simple'::regconfig, "
    "regexp_replace({body}, '[^[:alnum:]]+'::text, ' '::text, 'g'::text))"
)
# Its lexemes, one per distinct word.
WORDS_OF = f"tsvector_to_array({TSVECTOR_OF})"
# Words this long are found inside other words (trigram indexes need three characters);
# only they are listed.
SHORTEST = 3
# Every listed word of the bodies (what the list must hold), as `w`.
WORDS_OF_BODIES = (
    f"SELECT DISTINCT w FROM conversation_parts, unnest({WORDS_OF.format(body='body')}) AS w "
    f"WHERE body <> '' AND length(w) >= {SHORTEST}"
)
# The list filled from every body at once (after a bulk load).
FILL = f"INSERT INTO search_words (word) {WORDS_OF_BODIES} ON CONFLICT DO NOTHING"

_HOLDING = text(
    "SELECT CAST(:piece AS text) ~ '^[[:alnum:]]+$' AS plain, "
    "ARRAY(SELECT word FROM search_words WHERE word ILIKE :pattern LIMIT :limit) AS words"
).bindparams(bindparam("pattern", type_=Text(), literal_execute=True))
_WORDS_OF_CONVERSATION = text(f"{WORDS_OF_BODIES} AND conversation_id = :conversation_id")
# Words found in this many of the newest parts need no lookup of their own.
NEWEST_PARTS = 2_000
# Any constant key, of the two-integer form (one-bigint keys are conversation ids, which
# writes lock): it only has to be the same for every erasure.
_ERASURES_TAKE_TURNS = text("SELECT pg_advisory_xact_lock(1954, 4)")
_IN_NEWEST_PARTS = text(
    "SELECT DISTINCT w FROM (SELECT body FROM conversation_parts WHERE body <> '' "
    f"ORDER BY id DESC LIMIT :newest) AS p, unnest({WORDS_OF.format(body='p.body')}) AS w "
    "WHERE w = ANY(:words)"
)
_STILL_USED = text(
    "SELECT EXISTS (SELECT 1 FROM conversation_parts WHERE body <> '' AND "
    f"{TSVECTOR_OF.format(body='body')} @@ CAST(:lexeme AS tsquery))"
).bindparams(bindparam("lexeme", type_=Text(), literal_execute=True))

# The words of every non-empty body against the list: those missing from it (listed false)
# and those listed that no body has (listed true).
_DRIFT = text(
    "SELECT coalesce(listed.word, used.word) AS word, listed.word IS NOT NULL AS listed "
    f"FROM search_words AS listed FULL JOIN ({WORDS_OF_BODIES}) AS used(word) "
    "ON used.word = listed.word WHERE listed.word IS NULL OR used.word IS NULL ORDER BY 1"
)
_LOCK = text("LOCK TABLE search_words IN SHARE ROW EXCLUSIVE MODE")


@dataclass(frozen=True, slots=True)
class Holding:
    """The listed words that contain a piece; None when the word list cannot answer."""

    words: tuple[str, ...] | None


def lexeme(word: str) -> str:
    """`word` as one tsquery lexeme, taken as it is (no parsing, no normalisation)."""
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


async def holding(conn: AsyncConnection, piece: str) -> Holding:
    """The words containing `piece` (lower-case letters and digits, three or more)."""
    row = (
        await conn.execute(
            _HOLDING, {"piece": piece, "pattern": f"%{piece}%", "limit": MAX_WORDS + 1}
        )
    ).one()
    # A piece with a character PostgreSQL does not count as a letter or digit can span
    # two of its words: only the bodies themselves can answer.
    if not row.plain or len(row.words) > MAX_WORDS:
        return Holding(None)
    return Holding(tuple(row.words))


async def of_conversation(conn: AsyncConnection, conversation_id: int) -> list[str]:
    """The listed words of the conversation's bodies (before they are erased)."""
    rows = await conn.execute(_WORDS_OF_CONVERSATION, {"conversation_id": conversation_id})
    return sorted(str(r[0]) for r in rows)


async def forget(conn: AsyncConnection, words: Sequence[str]) -> None:
    """Take out of the list those of `words` (an erased conversation's, its bodies already
    emptied in this transaction) that no part holds any more.

    Erasures take their turn (a transaction-wide advisory lock), so each one sees the
    bodies the ones before it emptied, and a word two of them share is not kept by both.
    A word in one of the newest parts is common and stays; each other word is looked up
    in the whole-word index. Those no part holds are checked again under a table lock that
    waits for every transaction that has added words to end and holds new ones back until
    this one ends, so that a part holding one of them cannot be committed unseen while its
    word is taken out. The lock is held only for those few words.
    """
    if not words:
        return
    await conn.execute(_ERASURES_TAKE_TURNS)
    recent = await conn.execute(_IN_NEWEST_PARTS, {"words": list(words), "newest": NEWEST_PARTS})
    common = {str(r[0]) for r in recent}
    candidates = [w for w in words if w not in common]
    used = await _used(conn, candidates)
    unused = [w for w in candidates if w not in used]
    if not unused:
        return
    await conn.execute(_LOCK)
    used = await _used(conn, unused)
    unused = [w for w in unused if w not in used]
    if unused:
        await conn.execute(
            text("DELETE FROM search_words WHERE word = ANY(:words)"), {"words": unused}
        )


async def _used(conn: AsyncConnection, words: Sequence[str]) -> set[str]:
    """Those of `words` that a part holds, each looked up in the whole-word index (a word
    rare enough to get here has a short entry there; a table scan would test every body)."""
    if not words:
        return set()
    await conn.execute(text("SET LOCAL enable_seqscan = off"))
    try:
        return {
            word
            for word in words
            if (await conn.execute(_STILL_USED, {"lexeme": lexeme(word)})).scalar_one()
        }
    finally:
        await conn.execute(text("SET LOCAL enable_seqscan = on"))


@dataclass(frozen=True, slots=True)
class WordDrift:
    """The words the bodies have that the list lacks, and the listed words no body has."""

    missing: list[str]
    extra: list[str]


async def drift(conn: AsyncConnection) -> WordDrift:
    """The list against the words of every body (one scan of the parts)."""
    found = WordDrift([], [])
    for row in await conn.execute(_DRIFT):
        (found.extra if row.listed else found.missing).append(str(row.word))
    return found


async def restore(conn: AsyncConnection, words: Sequence[str]) -> None:
    """Add to the list those of `words` that a part holds: `forget`'s counterpart, under
    the same lock, so that a word erased meanwhile is not listed again."""
    if not words:
        return
    await conn.execute(_LOCK)
    used = sorted(await _used(conn, words))
    if used:
        await conn.execute(
            text(
                "INSERT INTO search_words (word) SELECT unnest(CAST(:words AS text[])) "
                "ON CONFLICT DO NOTHING"
            ),
            {"words": used},
        )

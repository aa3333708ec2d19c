"""search: the list of every word in part bodies, for finding words inside words

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-12 09:00:00

PostgreSQL only (SQLite's FTS5 trigram table already answers such searches in time):
`search_words` holds each distinct word of three characters or more of the part bodies,
as the whole-word index `ix_conversation_parts_words` has it, with a trigram index. A
search for a piece of a word looks up the few words that contain it, then their parts in
the whole-word index: the work follows the number of matches, not the number of parts.
A trigger adds the words of every new part; erasing a conversation takes out the words
no other part has (threadline.inbox.search.forget_words). Filled here from existing parts.
"""

# SQL text here is built from this file's own names, never from input.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The lexemes of a body exactly as in ix_conversation_parts_words (revision 0005).
_WORDS_OF = (
    "tsvector_to_array(to_tsvector('simple'::regconfig, "
    "regexp_replace({body}, '[^[:alnum:]]+'::text, ' '::text, 'g'::text)))"
)
# threadline.inbox.search.INSIDE_WORDS: shorter words are only ever found whole.
_SHORTEST = 3


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE search_words (word text PRIMARY KEY)")
    # The words come sorted (a tsvector's order), so concurrent writers adding the same
    # new words take their index entries in one order.
    op.execute(
        "CREATE FUNCTION search_words_add() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO search_words (word) "
        f"SELECT w FROM unnest({_WORDS_OF.format(body='NEW.body')}) AS w "
        f"WHERE length(w) >= {_SHORTEST} ON CONFLICT DO NOTHING; "
        "RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER search_words_add AFTER INSERT ON conversation_parts "
        "FOR EACH ROW WHEN (NEW.body <> '') EXECUTE FUNCTION search_words_add()"
    )
    op.execute(
        "INSERT INTO search_words (word) SELECT DISTINCT w FROM conversation_parts, "
        f"unnest({_WORDS_OF.format(body='body')}) AS w "
        f"WHERE body <> '' AND length(w) >= {_SHORTEST} ON CONFLICT DO NOTHING"
    )
    # New words are few once the list is filled: each goes into the index at once, rather
    # than into a pending list that every lookup would read through.
    op.execute(
        "CREATE INDEX ix_search_words_trigram ON search_words "
        "USING gin (word gin_trgm_ops) WITH (fastupdate = off)"
    )
    op.execute("ANALYZE search_words")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS search_words_add ON conversation_parts")
    op.execute("DROP FUNCTION IF EXISTS search_words_add()")
    op.execute("DROP TABLE IF EXISTS search_words")

"""search: the word list's trigger runs once per statement, adding its words in one order

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-20 09:00:00

PostgreSQL only. The trigger of revision 0010 ran once per inserted part, each adding that
part's words in sorted order. A statement that inserts the parts of several conversations at
once (threadline.conversations.batch) then added the words of one part after the other, not
in one order: two such transactions adding the same new words could each wait for the
other. Now the trigger runs once per statement, over all the parts it inserted (its
transition table, which also holds the rows of every data-modifying WITH query of the
statement), and adds their distinct words sorted: every writer takes the new words' index
entries in the same order, and one statement is one insert, not one per part.
"""

# SQL text here is built from this file's own names, never from input.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in revision 0010 (the lexemes of ix_conversation_parts_words).
_WORDS_OF = (
    "tsvector_to_array(to_tsvector('simple'::regconfig, "
    "regexp_replace({body}, '[^[:alnum:]]+'::text, ' '::text, 'g'::text)))"
)
_SHORTEST = 3


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS search_words_add ON conversation_parts")
    op.execute("DROP FUNCTION IF EXISTS search_words_add()")
    # Parts without a body (system parts) leave the list alone, not even locking it.
    op.execute(
        "CREATE FUNCTION search_words_add() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF EXISTS (SELECT 1 FROM new_parts WHERE body <> '') THEN "
        "INSERT INTO search_words (word) "
        f"SELECT DISTINCT w FROM new_parts, unnest({_WORDS_OF.format(body='new_parts.body')}) "
        f"AS w WHERE new_parts.body <> '' AND length(w) >= {_SHORTEST} "
        "ORDER BY w ON CONFLICT DO NOTHING; "
        "END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER search_words_add AFTER INSERT ON conversation_parts "
        "REFERENCING NEW TABLE AS new_parts "
        "FOR EACH STATEMENT EXECUTE FUNCTION search_words_add()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS search_words_add ON conversation_parts")
    op.execute("DROP FUNCTION IF EXISTS search_words_add()")
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

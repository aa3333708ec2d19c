"""The operators' inbox at scale: views, exact counts of every view, full-text search.

- `maintain`: called by every conversation write, in its transaction, to keep the tag index
  table (`conversation_tags`) and the count cells (`inbox_counts`) in step.
- `views`: the view filters and their keyset-paginated pages.
- `counts`: every view's exact count, from the count cells and the snoozed range.
- `search`: full-text search over part bodies, combined with any view.
- `words`: PostgreSQL's list of the words in part bodies, for finding pieces of words.
- `check`: `threadline check` of the tag rows, count cells and word list, and their repair.
"""

"""Moved: the connections' sort orders to db/orders.py, the progress and spending reads
to db/progress.py, `like_pattern` to db/search.py.

Kept only for the modules that still import it as `q` (resolvers/queries.py,
schema/compiled.py, schema/loaders.py); remove once they import the new modules.
"""

from giftgraph.db.orders import (
    COMMENTS,
    EVENTS,
    GIFTS,
    HISTORY,
    ITEMS,
    LISTS,
    OCCASIONS,
    PERSONS,
    USERS,
)
from giftgraph.db.progress import (
    LIST_ITEMS,
    SPENT,
    SPENT_STATUSES,
    ZERO,
    CurrencyTotal,
    Pipeline,
    Progress,
    Spending,
    family_currency,
    fold_progress,
    fold_spending,
    items_of,
    progress_statement,
    spent_of,
)
from giftgraph.db.search import like_pattern

__all__ = [
    "COMMENTS",
    "EVENTS",
    "GIFTS",
    "HISTORY",
    "ITEMS",
    "LISTS",
    "LIST_ITEMS",
    "OCCASIONS",
    "PERSONS",
    "SPENT",
    "SPENT_STATUSES",
    "USERS",
    "ZERO",
    "CurrencyTotal",
    "Pipeline",
    "Progress",
    "Spending",
    "family_currency",
    "fold_progress",
    "fold_spending",
    "items_of",
    "like_pattern",
    "progress_statement",
    "spent_of",
]

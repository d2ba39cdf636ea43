"""Resolvers, one module per entity: thin, with one unit of work per mutation."""

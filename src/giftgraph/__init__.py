"""GiftGraph: a real-time GraphQL API for families who plan gifts together."""

__version__ = "0.1.0"

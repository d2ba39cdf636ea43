"""The demo family of `giftgraph demo-data`: its catalogue as data (catalogue.json), the
generator that plans a family from it, and the seeding of a database."""

from giftgraph.demo.seed import DEMO_EMAIL, DEMO_PASSWORD, DemoLogin, seed

__all__ = ["DEMO_EMAIL", "DEMO_PASSWORD", "DemoLogin", "seed"]

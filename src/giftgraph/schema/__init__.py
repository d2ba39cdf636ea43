"""The Strawberry schema: types, inputs, enums, errors; schema.py assembles it."""

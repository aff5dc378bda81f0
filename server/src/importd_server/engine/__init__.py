"""The import engine: import types, parsing, validation and chunk processing."""

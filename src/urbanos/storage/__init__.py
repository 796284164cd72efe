"""Stores behind one interface (``base``): memory, SQLite, and later PostgreSQL."""

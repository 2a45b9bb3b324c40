"""The results store (SQLite embedded, PostgreSQL for a team): every session's run, kept.
db.py is the store (SQLAlchemy); url.py resolves where it is without importing SQLAlchemy."""

"""Alembic migrations of the verdict store (applied at server start-up)."""

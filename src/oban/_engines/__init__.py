"""Database engines: the only code that speaks SQL."""

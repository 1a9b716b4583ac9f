"""A Flask app that enqueues oban jobs in the transactions of its SQLAlchemy session: see
README.md."""

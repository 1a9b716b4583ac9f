"""The app's database: one SQLAlchemy engine, one session per thread (so per request), one
model."""

from __future__ import annotations

import os
from datetime import datetime

from sqlalchemy import DateTime, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, scoped_session, sessionmaker

#: ``postgresql+psycopg://user@host/db`` or ``sqlite:///path.db``
DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///flask_app.db")

engine = create_engine(DATABASE_URL)
db = scoped_session(sessionmaker(engine))


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    welcomed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

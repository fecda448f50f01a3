"""The declarative base and the constraint naming convention."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Stable names for every constraint and index, so migrations can drop or alter them."""


class Base(AsyncAttrs, DeclarativeBase):
    """Declarative base of every ecl-persistence model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)

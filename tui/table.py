"""The tables of the triage screen: Textual's DataTable, with each cell rendered once per content.

DataTable keeps what it rendered under a count of every change made to the table, so one cell
updated or one row removed (a decision) renders every visible cell again: some 300 cells on a
160×48 screen, 30 to 40 ms of the key press. Here a cell's rendering is kept under what decides
it (its row and column, its text, width, height, style, cursor and hover); when rows move (one
removed above), only the position a mouse click reads in it (its row and column index, Rich
meta data) is written again."""

from __future__ import annotations

from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual.cache import LRUCache
from textual.widgets import DataTable

Lines = list[list[Segment]]


class KeptTable(DataTable[Any]):
    """A DataTable whose cells are rendered again only when what they show changed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: LRUCache[tuple[Any, ...], tuple[int, int, Lines]] = LRUCache(8192)

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._kept.clear()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._kept.clear()

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> Lines:
        if row_index < 0 or column_index < 0:  # the header and row labels: as DataTable does
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row, value = self.rows[row_key], self._data[row_key][column_key]
        if row.auto_height or not isinstance(value, str):  # a Rich renderable is no key: as DataTable does
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        fixed = row_index < self.fixed_rows or column_index < self.fixed_columns
        key = (row_key, column_key, value, width, row.height, base_style, cursor, hover, self._show_hover_cursor,
               self._pseudo_class_state, fixed, self.show_cursor)
        found = self._kept.get(key)
        if found is None:
            lines = super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
            self._kept[key] = (row_index, column_index, lines)
            return lines
        at_row, at_column, lines = found
        if (at_row, at_column) != (row_index, column_index):
            where = Style.from_meta({"row": row_index, "column": column_index})
            lines = [[Segment(s.text, s.style + where if s.style else where, s.control) for s in line]
                     for line in lines]
            self._kept[key] = (row_index, column_index, lines)
        return lines

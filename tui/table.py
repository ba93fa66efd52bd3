"""The tables of the triage screen: Textual's DataTable, with each line and each cell rendered once
per content.

DataTable keeps what it rendered under a count of every change made to the table, so one cell
updated or one row removed (a decision) renders every visible line again, each from its cells:
34 lines and some 300 cells on a 160×48 screen, 10 ms of the key press for lines that show what
they showed. Here a line's rendering, and a cell's, is kept under what decides it (its row and
column, its text, width, style, cursor and hover); when rows move (one removed above), only the
position a mouse click reads in it (its row index, Rich meta data) is written again."""

from __future__ import annotations

from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual.cache import LRUCache
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import DataTable

Lines = list[list[Segment]]


class KeptTable(DataTable[Any]):
    """A DataTable whose lines and cells are rendered again only when what they show changed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: LRUCache[tuple[Any, ...], tuple[int, int, Lines]] = LRUCache(8192)
        self._kept_lines: LRUCache[tuple[Any, ...], tuple[int, Strip]] = LRUCache(4096)
        self._style_of_repaint: Style | None = None

    # DataTable clears its caches on every change (a row removed, the table cleared and filled again):
    # these are kept, as what they are kept under says all that a line shows; a page read again
    # renders only the lines that changed. They are bounded (LRU); a change of style empties them.

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._kept.clear()
        self._kept_lines.clear()

    @property
    def rich_style(self) -> Style:
        if self._style_of_repaint is not None:
            return self._style_of_repaint
        return super().rich_style

    def render_lines(self, crop: Region) -> list[Strip]:
        # DataTable asks for its style on every line, each time walking its ancestors up to the
        # screen (30 µs, 1 ms for a screenful): it cannot change in the middle of one repaint.
        self._style_of_repaint = super().rich_style
        try:
            return super().render_lines(crop)
        finally:
            self._style_of_repaint = None

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        try:
            row_key, line_no = self._get_offsets(y)
        except LookupError:  # below the last row: as DataTable does
            return super()._render_line(y, x1, x2, base_style)
        row, row_index = self.rows.get(row_key), self._row_locations.get(row_key)  # None for the header
        if row is None or row_index is None or row.label is not None or row.auto_height:
            return super()._render_line(y, x1, x2, base_style)
        values = self._data[row_key]
        columns = self.ordered_columns
        cells = tuple(values.get(c.key) for c in columns)
        if not all(isinstance(v, str) for v in cells):  # a Rich renderable is no key: as DataTable does
            return super()._render_line(y, x1, x2, base_style)
        cursor, hover = self.cursor_coordinate, self.hover_coordinate
        # What the line shows besides its cells: the cursor and hover on this row (or their column,
        # for a column cursor), the rows and columns held fixed, the zebra stripe.
        key = (row_key, line_no, cells, tuple(c.get_render_width(self) for c in columns), x1, x2, self.size.width,
               base_style, self.cursor_type, self.show_cursor, self._show_hover_cursor, self._pseudo_class_state,
               cursor.row == row_index, cursor.column, hover.row == row_index, hover.column, row.height,
               self.fixed_columns, row_index < self.fixed_rows, self.zebra_stripes and row_index % 2,
               self.show_row_labels and self._labelled_row_exists, self._row_label_column_width)
        found = self._kept_lines.get(key)
        if found is None:
            strip = super()._render_line(y, x1, x2, base_style)
        else:
            at_row, strip = found
            if at_row == row_index:
                return strip
            where = Style.from_meta({"row": row_index})  # merged into each segment's meta: its column stays
            strip = Strip([Segment(s.text, s.style + where if s.style else s.style, s.control) for s in strip],
                          strip.cell_length)
        self._kept_lines[key] = (row_index, strip)
        return strip

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

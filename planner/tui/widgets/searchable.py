"""Search-as-you-type and header sorting shared by the devices and models tables."""

from __future__ import annotations

from textual.widgets import DataTable, Input


class SearchableTable:
    """Mixin for a pane with a search Input and a sortable DataTable.

    The pane sets SEARCH_ID, TABLE_ID, COLUMNS ((header, sort key or None), ...) and SORTS (sort key ->
    (header, key function, descending by default)), keeps `query_text`, `sort` and `reverse`, and implements
    refresh_rows().
    """

    SEARCH_ID = ""
    TABLE_ID = ""
    COLUMNS: tuple[tuple[str, str | None], ...] = ()
    SORTS: dict = {}

    def on_input_changed(self, event: Input.Changed) -> None:
        """Search as you type."""
        if event.input.id == self.SEARCH_ID:
            self.query_text = event.value
            self.refresh_rows()  # type: ignore[attr-defined]

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the search box moves to the table."""
        if event.input.id == self.SEARCH_ID:
            self.query_one(f"#{self.TABLE_ID}", DataTable).focus()  # type: ignore[attr-defined]

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """Click a header to sort by it; click again to reverse."""
        sort = dict(self.COLUMNS).get(str(event.column_key.value))
        if sort:
            self.set_sort(sort)

    def set_sort(self, sort: str) -> None:
        """Sort by a key; the same key again flips the direction."""
        if sort == self.sort:  # type: ignore[has-type]
            default = self.SORTS[sort][2]
            self.reverse = not (default if self.reverse is None else self.reverse)  # type: ignore[has-type]
        else:
            self.sort, self.reverse = sort, None
        self.refresh_rows()  # type: ignore[attr-defined]

    def cycle_sort(self) -> None:
        """The next sort key."""
        order = [s for _, s in self.COLUMNS if s]
        self.set_sort(order[(order.index(self.sort) + 1) % len(order)])

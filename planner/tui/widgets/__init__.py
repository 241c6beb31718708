"""The TUI's panes and small widgets; each reads the app's state and calls the library, nothing more."""

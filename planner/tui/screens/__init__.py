"""The TUI's screens: the tabbed main screen and the help screen."""

"""`planner tui`: a Textual shell over the library to browse devices and models and see what fits where."""

"""The Textual dashboard. Importing this package never imports torch."""

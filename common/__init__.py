"""The ground floor every package may import; it imports nothing of the project."""

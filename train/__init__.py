"""Reserved: filled by a later issue (see ../shared/spec/architecture.md)."""

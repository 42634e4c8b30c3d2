"""What people read: trees, reports, plots and exported datasets."""

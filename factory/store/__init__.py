"""The storage layer: the warehouse file (connection, migrations, writer), runs and folders on disk."""

"""importd client: the Python library for the importd bulk-import service."""

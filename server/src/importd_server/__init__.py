"""importd: bulk-import jobs as a gRPC service."""

"""The gRPC edge: servicers that translate messages to domain calls and errors to status."""

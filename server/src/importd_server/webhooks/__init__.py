"""Webhooks: jobs' status changes POSTed from the outbox, signed the Standard Webhooks way."""

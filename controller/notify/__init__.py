"""Campaign events to webhooks (issue 16; README "Webhooks").

events    what a campaign event is, read from an audit record (pure)
webhooks  delivery: signed POSTs, retried with backoff, from a cursor
          into the audit trail kept in the store
"""

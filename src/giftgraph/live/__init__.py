"""Live events: resilient broadcaster backends, the hub, subscription streams, the shared
dashboard and presence; `layer.Live` holds them for one process."""

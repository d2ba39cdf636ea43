"""HTTP-level pieces: GraphQL-over-HTTP negotiation, body limits, the dashboard page."""

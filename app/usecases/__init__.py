"""What the service does, between the routes (and `faceid gallery`) and the machinery: identify, enrol, the persons resource, bulk work."""

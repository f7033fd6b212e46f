"""armq export stage."""

"""armq deploy stage."""

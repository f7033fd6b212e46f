"""armq quant stage."""

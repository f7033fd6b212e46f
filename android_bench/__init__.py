"""armq android_bench stage."""
